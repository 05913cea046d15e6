#!/usr/bin/env python3
"""docs/openapi.yaml against a real `keel node`: the spec cannot drift from the code.

    python3 tests/e2e/node_openapi_test.py KEEL_BINARY docs/openapi.yaml

Starts `keel node` on a free port with a temporary data dir, then exercises every path and
method of the spec, error cases included. For each request it finds the operation in the spec
and checks that the answer's status is one the operation documents, that its Content-Type is
the documented media type, and that its body validates against the documented schema (204: no
body). Requests the spec has no operation for are checked against docs/api.md's rules: an
unknown route is 404 not_found, a known path with another method 405 method_not_allowed with an
Allow header naming exactly the spec's methods for the path. Subscriptions must answer
text/event-stream; their first frame is read (with a socket timeout) and its event validated.
Every operation must have been answered 2xx at least once. A request the server accepted (2xx)
must also be valid by the spec (its query, path and body), so that the spec does not refuse what
the server takes.

Each mismatch is printed with the method, target, status, the schema path that failed and the
body; the exit status is 1 if there was any, 0 otherwise. Python 3 and PyYAML only.
"""

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

import yaml

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

# docs/api.md, "Errors": the codes each status may carry.
ERROR_CODES_BY_STATUS = {
    400: {"bad_json", "invalid_argument", "invalid_stream_name"},
    403: {"system_stream"},
    404: {"not_found"},
    405: {"method_not_allowed"},
    409: {"wrong_expected_version", "duplicate_event_id", "conflict"},
    410: {"stream_deleted"},
    413: {"payload_too_large"},
    415: {"unsupported_media_type"},
    500: {"corrupt", "internal"},
    503: {"unavailable"},
    507: {"disk_full"},
}

MAX_BODY_BYTES = 65536  # limits.max_body_bytes of the node started here
MAX_SUBSCRIBERS = 32  # limits.max_subscribers
SSE_TIMEOUT_S = 5.0

failures = []


def report(message):
    failures.append(message)
    print(message, flush=True)


notes = set()


def note(message):
    """Worth knowing, not a mismatch with the spec: printed once, does not fail the test."""
    if message not in notes:
        notes.add(message)
        print(f"NOTE {message}", flush=True)


def shorten(data, limit=1500):
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    return data if len(data) <= limit else data[:limit] + f"... ({len(data)} chars)"


# ---------------------------------------------------------------------------------------------
# The JSON Schema subset of OpenAPI 3.0 schemas.

SUPPORTED_KEYWORDS = {
    "$ref", "type", "nullable", "properties", "required", "additionalProperties", "items",
    "enum", "oneOf", "anyOf", "allOf", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "pattern", "minItems", "maxItems", "minLength", "maxLength",
    # annotations, no assertion
    "format", "default", "description", "title", "example", "deprecated", "readOnly",
    "writeOnly",
}


def json_type_name(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def describe(value):
    text = json.dumps(value)
    return f"{json_type_name(value)} {shorten(text, 120)}"


def type_matches(expected, value):
    if expected == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected == "string":
        return isinstance(value, str)
    if expected == "boolean":
        return isinstance(value, bool)
    if expected == "object":
        return isinstance(value, dict)
    if expected == "array":
        return isinstance(value, list)
    raise ValueError(f"unknown schema type {expected!r}")


def json_equal(a, b):
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return a == b


class Spec:
    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            self.doc = yaml.safe_load(f)
        self.paths = []  # (regex, template, path item), literal routes before templated ones
        for template, item in self.doc["paths"].items():
            parts = []
            for segment in template.strip("/").split("/"):
                m = re.fullmatch(r"\{(\w+)\}", segment)
                parts.append(f"(?P<{m.group(1)}>[^/]+)" if m else re.escape(segment))
            regex = re.compile("^/" + "/".join(parts) + "$")
            self.paths.append((template.count("{"), regex, template, item))
        self.paths.sort(key=lambda p: p[0])
        self.operations = {}  # operationId -> (method, template)
        for _, _, template, item in self.paths:
            for method in HTTP_METHODS:
                if method in item:
                    op = item[method]
                    op_id = op.get("operationId") or f"{method.upper()} {template}"
                    self.operations[op_id] = (method.upper(), template)

    # -- $ref

    def resolve_pointer(self, ref):
        if not ref.startswith("#/"):
            raise ValueError(f"only local $refs are supported, not {ref!r}")
        node = self.doc
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            node = node[part]
        return node

    def deref(self, obj):
        """obj, or what its $ref (chain) names; with the pointer of where it ended up."""
        where = None
        seen = set()
        while isinstance(obj, dict) and "$ref" in obj:
            where = obj["$ref"]
            if where in seen:
                raise ValueError(f"$ref cycle at {where}")
            seen.add(where)
            obj = self.resolve_pointer(where)
        return obj, where

    # -- the spec's own shape: every schema keyword is one the validator knows

    def audit(self):
        problems = []

        def schema(s, where):
            if not isinstance(s, dict):
                problems.append(f"{where}: a schema must be an object")
                return
            for key in s:
                if key not in SUPPORTED_KEYWORDS and not key.startswith("x-"):
                    problems.append(f"{where}: schema keyword {key!r} is not validated by this test")
            for name, sub in (s.get("properties") or {}).items():
                schema(sub, f"{where}/properties/{name}")
            if isinstance(s.get("additionalProperties"), dict):
                schema(s["additionalProperties"], f"{where}/additionalProperties")
            if "items" in s:
                schema(s["items"], f"{where}/items")
            for kw in ("allOf", "anyOf", "oneOf"):
                for i, sub in enumerate(s.get(kw) or []):
                    schema(sub, f"{where}/{kw}/{i}")
            if "$ref" in s:
                try:
                    self.resolve_pointer(s["$ref"])
                except (KeyError, ValueError, TypeError):
                    problems.append(f"{where}: $ref {s['$ref']!r} names nothing")

        def content(c, where):
            for media, body in (c or {}).items():
                if "schema" in body:
                    schema(body["schema"], f"{where}/content/{media}/schema")

        def parameter(p, where):
            p, ref = self.deref(p)
            where = ref or where
            if "schema" in p:
                schema(p["schema"], f"{where}/schema")

        def response(r, where):
            r, ref = self.deref(r)
            content(r.get("content"), ref or where)

        for name, s in (self.doc.get("components", {}).get("schemas") or {}).items():
            schema(s, f"#/components/schemas/{name}")
        for _, _, template, item in self.paths:
            base = f"#/paths/{template}"
            for i, p in enumerate(item.get("parameters") or []):
                parameter(p, f"{base}/parameters/{i}")
            for method in HTTP_METHODS:
                if method not in item:
                    continue
                op = item[method]
                for i, p in enumerate(op.get("parameters") or []):
                    parameter(p, f"{base}/{method}/parameters/{i}")
                if "requestBody" in op:
                    rb, ref = self.deref(op["requestBody"])
                    content(rb.get("content"), ref or f"{base}/{method}/requestBody")
                for status, r in (op.get("responses") or {}).items():
                    response(r, f"{base}/{method}/responses/{status}")
        return problems

    # -- validation

    def validate(self, schema, value, where="#"):
        """[(instance path, schema path, message)] of what does not hold."""
        errors = []
        self._validate(schema, value, "$", where, errors)
        return errors

    def _validate(self, schema, value, ip, sp, errors):
        if "$ref" in schema:  # OpenAPI 3.0: a $ref's siblings are ignored
            target, ref = self.deref(schema)
            return self._validate(target, value, ip, ref, errors)
        if value is None and schema.get("nullable") is True:
            return
        expected = schema.get("type")
        if expected is not None and not type_matches(expected, value):
            errors.append((ip, f"{sp}/type", f"expected {expected}, got {describe(value)}"))
            return
        if "enum" in schema and not any(json_equal(value, e) for e in schema["enum"]):
            errors.append((ip, f"{sp}/enum", f"{describe(value)} is not one of {schema['enum']}"))
        for i, sub in enumerate(schema.get("allOf") or []):
            self._validate(sub, value, ip, f"{sp}/allOf/{i}", errors)
        for kw in ("anyOf", "oneOf"):
            if kw not in schema:
                continue
            branches = []
            for i, sub in enumerate(schema[kw]):
                sub_errors = []
                self._validate(sub, value, ip, f"{sp}/{kw}/{i}", sub_errors)
                branches.append(sub_errors)
            passing = [i for i, e in enumerate(branches) if not e]
            if kw == "anyOf" and not passing or kw == "oneOf" and len(passing) != 1:
                why = "none of the branches matches" if not passing else (
                    f"branches {passing} all match; oneOf needs exactly one")
                detail = "; ".join(f"[{i}] {e[0][1]}: {e[0][2]}" for i, e in enumerate(branches) if e)
                errors.append((ip, f"{sp}/{kw}", why + (f" ({detail})" if detail else "")))
        if isinstance(value, dict):
            for name in schema.get("required") or []:
                if name not in value:
                    errors.append((ip, f"{sp}/required", f"required property {name!r} is missing"))
            properties = schema.get("properties") or {}
            extra = schema.get("additionalProperties", True)
            for name, member in value.items():
                if name in properties:
                    self._validate(properties[name], member, f"{ip}.{name}",
                                   f"{sp}/properties/{name}", errors)
                elif extra is False:
                    errors.append((f"{ip}.{name}", f"{sp}/additionalProperties",
                                   f"property {name!r} is not allowed (additionalProperties: false)"))
                elif isinstance(extra, dict):
                    self._validate(extra, member, f"{ip}.{name}", f"{sp}/additionalProperties",
                                   errors)
        if isinstance(value, list):
            if "minItems" in schema and len(value) < schema["minItems"]:
                errors.append((ip, f"{sp}/minItems", f"{len(value)} items, fewer than {schema['minItems']}"))
            if "maxItems" in schema and len(value) > schema["maxItems"]:
                errors.append((ip, f"{sp}/maxItems", f"{len(value)} items, more than {schema['maxItems']}"))
            if "items" in schema:
                for i, item in enumerate(value):
                    self._validate(schema["items"], item, f"{ip}[{i}]", f"{sp}/items", errors)
        if isinstance(value, str):
            if "pattern" in schema and not re.search(schema["pattern"], value):
                errors.append((ip, f"{sp}/pattern", f"{value!r} does not match {schema['pattern']!r}"))
            if "minLength" in schema and len(value) < schema["minLength"]:
                errors.append((ip, f"{sp}/minLength", f"{len(value)} characters, fewer than {schema['minLength']}"))
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                errors.append((ip, f"{sp}/maxLength", f"{len(value)} characters, more than {schema['maxLength']}"))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if "minimum" in schema:
                low, excl = schema["minimum"], schema.get("exclusiveMinimum") is True
                if value < low or excl and value == low:
                    errors.append((ip, f"{sp}/minimum", f"{value} is below the minimum {low}"))
            if "maximum" in schema:
                high, excl = schema["maximum"], schema.get("exclusiveMaximum") is True
                if value > high or excl and value == high:
                    errors.append((ip, f"{sp}/maximum", f"{value} is over the maximum {high}"))


# ---------------------------------------------------------------------------------------------
# HTTP


class Exchange:
    def __init__(self, method, target, req_headers, req_body):
        self.method = method
        self.target = target
        self.req_headers = req_headers
        self.req_body = req_body
        self.status = None
        self.headers = {}  # lower-cased names
        self.body = b""
        self.sse_frame = None  # the first frame of an event stream, as text
        self.transport_error = None

    @property
    def path(self):
        return self.target.split("?", 1)[0]

    @property
    def query(self):
        return self.target.split("?", 1)[1] if "?" in self.target else ""

    def header(self, name):
        return self.headers.get(name.lower())

    def json(self):
        return parse_json(self.body)

    def __str__(self):
        return f"{self.method} {self.target} -> {self.status}"


def parse_json(data):
    def no_duplicates(pairs):
        out = {}
        for key, value in pairs:
            if key in out:
                raise ValueError(f"duplicate key {key!r}")
            out[key] = value
        return out

    text = data.decode("utf-8") if isinstance(data, bytes) else data
    return json.loads(text, object_pairs_hook=no_duplicates)


class Client:
    def __init__(self, host, port):
        self.host = host
        self.port = port

    def send(self, method, target, body=None, headers=None, timeout=15.0):
        headers = dict(headers or {})
        if isinstance(body, str):
            body = body.encode("utf-8")
        ex = Exchange(method, target, headers, body)
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.putrequest(method, target, skip_accept_encoding=True)
            for name, value in headers.items():
                conn.putheader(name, value)
            if body is not None or method in ("POST", "PUT"):
                conn.putheader("Content-Length", str(len(body or b"")))
            try:
                conn.endheaders(body)
            except (BrokenPipeError, ConnectionResetError) as e:
                ex.transport_error = f"sending: {e!r}"  # the server may answer and close early
            resp = conn.getresponse()
            ex.status = resp.status
            ex.headers = {k.lower(): v for k, v in resp.getheaders()}
            ex.body = resp.read()
            ex.transport_error = None
        except (OSError, http.client.HTTPException) as e:
            ex.transport_error = (ex.transport_error + "; " if ex.transport_error else "") + repr(e)
        finally:
            conn.close()
        return ex

    def subscribe(self, target, headers=None):
        """Opens an event stream and reads its first frame (or the whole body of a refusal)."""
        ex = Exchange("GET", target, dict(headers or {}), None)
        conn = http.client.HTTPConnection(self.host, self.port, timeout=SSE_TIMEOUT_S)
        try:
            conn.putrequest("GET", target, skip_accept_encoding=True)
            conn.putheader("Accept", "text/event-stream")
            for name, value in (headers or {}).items():
                conn.putheader(name, value)
            conn.endheaders()
            resp = conn.getresponse()
            ex.status = resp.status
            ex.headers = {k.lower(): v for k, v in resp.getheaders()}
            ctype = (ex.header("content-type") or "").split(";")[0].strip().lower()
            if resp.status == 200 and ctype == "text/event-stream":
                lines = []
                while True:
                    line = resp.readline()
                    if not line:
                        ex.transport_error = "the stream ended before a whole frame"
                        break
                    line = line.decode("utf-8", "replace").rstrip("\r\n")
                    if line == "":
                        if lines:
                            break
                        continue
                    lines.append(line)
                ex.sse_frame = "\n".join(lines)
                ex.body = ex.sse_frame.encode()
            else:
                ex.body = resp.read()
        except socket.timeout:
            ex.transport_error = f"no whole frame within {SSE_TIMEOUT_S} s"
        except (OSError, http.client.HTTPException) as e:
            ex.transport_error = repr(e)
        finally:
            conn.close()
        return ex

    def raw(self, data, timeout=10.0):
        """Bytes as they are; the answer's status, headers and body (Content-Length framed)."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as s:
            s.sendall(data)
            received = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except (socket.timeout, ConnectionResetError):
                    break
                if not chunk:
                    break
                received += chunk
                head, sep, rest = received.partition(b"\r\n\r\n")
                if sep:
                    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                    if m and len(rest) >= int(m.group(1)):
                        break
        head, _, body = received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else None
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers, body


# ---------------------------------------------------------------------------------------------
# Checking one exchange against the spec


class Checker:
    def __init__(self, spec):
        self.spec = spec
        self.covered = set()
        self.requests = 0

    def fail(self, ex, what, body=True):
        lines = [f"FAIL {ex.method} {ex.target} -> {ex.status}: {what}"]
        if body and ex.body:
            lines.append(f"     body: {shorten(ex.body)}")
        report("\n".join(lines))

    def find(self, path):
        for _, regex, template, item in self.spec.paths:
            m = regex.match(path)
            if m:
                return template, item, m.groupdict()
        return None, None, None

    def check(self, ex, expect=None, error=None, doc=None, semantic=None):
        """Checks `ex` against the spec; `expect` the status (or statuses) docs/api.md gives for
        this request, `error` its error code, `semantic` a function returning a complaint or
        None. Returns the parsed JSON body when there is one."""
        self.requests += 1
        note = f" [{doc}]" if doc else ""
        if ex.transport_error and ex.status is None:
            self.fail(ex, f"no answer: {ex.transport_error}{note}")
            return None
        if ex.transport_error:
            self.fail(ex, f"transport: {ex.transport_error}{note}")
        expected = (expect,) if isinstance(expect, int) else expect
        if expected is not None and ex.status not in expected:
            self.fail(ex, f"expected status {' or '.join(map(str, expected))}, got {ex.status}{note}")

        template, item, params = self.find(ex.path)
        method = ex.method.lower()
        parsed = None
        if template is None:
            parsed = self.check_error_body(ex, "no route in the spec")
            if ex.status != 404 and expected is None:
                self.fail(ex, "a path the spec does not have must be 404 not_found (docs/api.md: "
                              "'Anything else is 404 not_found')")
        elif method not in item or ex.method != ex.method.upper():
            allowed = {m.upper() for m in HTTP_METHODS if m in item}
            if ex.status != 405 and expected is None:
                self.fail(ex, f"{ex.method} is not an operation of {template} in the spec "
                              f"(which has {sorted(allowed)}): expected 405 method_not_allowed "
                              f"(docs/api.md: 'A known path with another method is 405')")
            allow = ex.header("allow")
            if ex.status != 405:
                pass
            elif allow is None:
                self.fail(ex, "a 405 answer without an Allow header", body=False)
            else:
                got = {m.strip() for m in allow.split(",") if m.strip()}
                if got != allowed:
                    self.fail(ex, f"Allow: {allow!r}, but the spec's methods for {template} are "
                                  f"{', '.join(sorted(allowed))}", body=False)
            if ex.method != "HEAD":
                parsed = self.check_error_body(ex, f"no operation {ex.method} {template}")
        else:
            parsed = self.check_operation(ex, template, item, method, params)

        if ex.status is not None and ex.status >= 400 and isinstance(parsed, dict):
            code = parsed.get("error")
            allowed_codes = ERROR_CODES_BY_STATUS.get(ex.status)
            known = set().union(*ERROR_CODES_BY_STATUS.values())
            if allowed_codes is not None and code in known and code not in allowed_codes:
                self.fail(ex, f"error code {code!r} with status {ex.status}; docs/api.md gives "
                              f"{sorted(allowed_codes)}")
            if error is not None and code != error and (expected is None or ex.status in expected):
                self.fail(ex, f"expected error {error!r}, got {code!r}{note}")
            if "actual_version" in parsed and code != "wrong_expected_version":
                self.fail(ex, "actual_version in an error that is not wrong_expected_version")
        if semantic is not None and ex.status is not None and 200 <= ex.status < 300:
            try:
                complaint = semantic(parsed if parsed is not None else ex)
            except Exception as e:  # a semantic check that cannot even look is a failure too
                complaint = f"checking the answer raised {e!r}"
            if complaint:
                self.fail(ex, f"{complaint}{note}")
        return parsed

    def check_error_body(self, ex, where):
        ctype = (ex.header("content-type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            self.fail(ex, f"{where}: an error answer must be application/json, got {ctype!r}")
            return None
        try:
            parsed = ex.json()
        except ValueError as e:
            self.fail(ex, f"{where}: the body is not JSON ({e})")
            return None
        schema = {"$ref": "#/components/schemas/Error"}
        for ip, sp, message in self.spec.validate(schema, parsed):
            self.fail(ex, f"{where}: body {ip} fails {sp}: {message}")
        return parsed

    def check_operation(self, ex, template, item, method, params):
        op = item[method]
        op_id = op.get("operationId") or f"{method.upper()} {template}"
        responses = op.get("responses") or {}
        key = str(ex.status)
        if key not in responses:
            key = f"{key[0]}XX" if f"{key[0]}XX" in responses else "default"
        if key not in responses:
            self.fail(ex, f"status {ex.status} is not documented for {op_id} ({method.upper()} "
                          f"{template} documents {', '.join(sorted(map(str, responses)))})")
            if ex.status >= 400:
                return self.check_error_body(ex, f"{op_id} (undocumented {ex.status})")
            return None
        response, ref = self.spec.deref(responses[key])
        where = ref or f"#/paths/{template}/{method}/responses/{key}"
        content = response.get("content") or {}
        parsed = None
        if not content:
            if ex.body:
                self.fail(ex, f"{where} has no content, but the answer has a body")
            if ex.status == 204 and ex.header("content-length") is not None:
                note(f"{op_id}: a 204 answer carries Content-Length: {ex.header('content-length')}"
                     f" (RFC 9110 8.6: a server MUST NOT send it in a 204)")
            if ex.status == 204 and ex.header("content-type") is not None:
                note(f"{op_id}: a 204 answer carries Content-Type: {ex.header('content-type')}")
        else:
            ctype_header = ex.header("content-type")
            ctype = (ctype_header or "").split(";")[0].strip().lower()
            media = next((m for m in content if m.lower() == ctype), None)
            if media is None:
                self.fail(ex, f"Content-Type {ctype_header!r} is not the documented "
                              f"{', '.join(content)} ({where})")
            else:
                schema = content[media].get("schema")
                if ctype == "application/json" or ctype.endswith("+json"):
                    try:
                        parsed = ex.json()
                    except ValueError as e:
                        self.fail(ex, f"the body is not JSON ({e}) ({where})")
                        parsed = None
                        schema = None
                    if schema is not None:
                        for ip, sp, message in self.spec.validate(schema, parsed, where + "/content/" + media + "/schema"):
                            self.fail(ex, f"body {ip} fails {sp}: {message}")
                elif ctype == "text/event-stream":
                    self.check_sse_frame(ex)
                else:
                    try:
                        text = ex.body.decode("utf-8")
                    except UnicodeDecodeError as e:
                        self.fail(ex, f"the {ctype} body is not UTF-8 ({e})", body=False)
                        text = None
                    if text is not None and schema is not None:
                        for ip, sp, message in self.spec.validate(schema, text):
                            self.fail(ex, f"body {ip} fails {sp}: {message}", body=False)
        if 200 <= ex.status < 300:
            self.covered.add(op_id)
            self.check_request(ex, template, item, op, op_id, params)
        return parsed

    # -- an accepted request must be valid by the spec too

    def check_request(self, ex, template, item, op, op_id, path_params):
        declared = {}
        for p in list(item.get("parameters") or []) + list(op.get("parameters") or []):
            p, _ = self.spec.deref(p)
            declared[(p["in"], p["name"].lower() if p["in"] == "header" else p["name"])] = p
        prefix = f"the server accepted ({ex.status}) what the spec refuses:"
        for name, raw in path_params.items():
            p = declared.get(("path", name))
            if p is None:
                self.fail(ex, f"{prefix} path parameter {{{name}}} is not declared", body=False)
                continue
            value = urllib.parse.unquote(raw, errors="surrogateescape")
            for ip, sp, message in self.spec.validate(p.get("schema") or {}, value):
                self.fail(ex, f"{prefix} path {{{name}}}={value!r} fails {sp}: {message}", body=False)
        query = {}
        for name, value in urllib.parse.parse_qsl(ex.query, keep_blank_values=True):
            query.setdefault(name, []).append(value)
        if "operations" in (op.get("tags") or []):
            query = {}  # docs/api.md: the operational routes ignore their query string
        for name, values in query.items():
            p = declared.get(("query", name))
            if p is None:
                self.fail(ex, f"{prefix} query parameter {name!r} is not declared for {op_id}",
                          body=False)
                continue
            schema = p.get("schema") or {}
            resolved, _ = self.spec.deref(schema)
            if resolved.get("type") == "array":
                value = values
            else:
                if len(values) > 1:
                    self.fail(ex, f"{prefix} ?{name} repeated, but it is not an array", body=False)
                value = values[0]
                if resolved.get("type") == "integer":
                    value = int(value) if re.fullmatch(r"[0-9]+", value) else value
                elif resolved.get("type") == "boolean":
                    value = {"true": True, "false": False}.get(value, value)
            for ip, sp, message in self.spec.validate(schema, value):
                self.fail(ex, f"{prefix} ?{name}={values} fails {sp}: {message}", body=False)
        for (where, name), p in declared.items():
            if where == "header" and name in {k.lower() for k in ex.req_headers}:
                value = next(v for k, v in ex.req_headers.items() if k.lower() == name)
                for ip, sp, message in self.spec.validate(p.get("schema") or {}, value):
                    self.fail(ex, f"{prefix} header {name}: {value!r} fails {sp}: {message}", body=False)
            if p.get("required") and where == "query" and name not in query:
                self.fail(ex, f"{prefix} required query parameter {name!r} is missing", body=False)
        body = op.get("requestBody")
        if body is None:
            return
        body, ref = self.spec.deref(body)
        if not ex.req_body:
            if body.get("required"):
                self.fail(ex, f"{prefix} the request body is required", body=False)
            return
        ctype = next((v for k, v in ex.req_headers.items() if k.lower() == "content-type"), "")
        media = ctype.split(";")[0].strip().lower()
        if media.startswith("application/") and media.endswith("+json"):
            media = "application/json"  # docs/api.md: application/<anything>+json is JSON too
        content = body.get("content") or {}
        if media not in content:
            self.fail(ex, f"{prefix} request Content-Type {ctype!r} is not one of {list(content)}",
                      body=False)
            return
        schema = content[media].get("schema")
        if schema is None:
            return
        try:
            value = parse_json(ex.req_body)
        except ValueError as e:
            self.fail(ex, f"{prefix} the request body is not JSON ({e})", body=False)
            return
        for ip, sp, message in self.spec.validate(schema, value):
            self.fail(ex, f"{prefix} request body {ip} fails {sp}: {message}\n     request: "
                          f"{shorten(ex.req_body, 400)}", body=False)

    # -- event streams

    def check_sse_frame(self, ex):
        if ex.sse_frame is None:
            self.fail(ex, f"no event-stream frame: {ex.transport_error}", body=False)
            return
        fields = {"id": [], "event": [], "data": [], "comment": []}
        for line in ex.sse_frame.split("\n"):
            if line.startswith(":"):
                fields["comment"].append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name not in fields:
                self.fail(ex, f"event-stream frame with an unknown field {name!r}: {line!r}")
                continue
            fields[name].append(value)
        ex.sse_fields = fields
        if fields["comment"] and not (fields["id"] or fields["event"] or fields["data"]):
            return  # a keep-alive comment
        if fields["id"] and not fields["data"] and not fields["event"]:
            if not re.fullmatch(r"[0-9]+", fields["id"][0]):
                self.fail(ex, f"a checkpoint frame whose id is not a number: {ex.sse_frame!r}")
            return  # a checkpoint
        if not fields["data"] or not fields["id"] or not fields["event"]:
            self.fail(ex, "an event-stream frame that is none of the documented kinds (event "
                          "`id/event/data`, checkpoint `id`, comment `:`)")
            return
        try:
            event = parse_json("\n".join(fields["data"]))
        except ValueError as e:
            self.fail(ex, f"the frame's data is not JSON ({e})")
            return
        ex.sse_event = event
        schema = {"$ref": "#/components/schemas/Event"}
        for ip, sp, message in self.spec.validate(schema, event):
            self.fail(ex, f"frame data {ip} fails {sp}: {message} (frame event: "
                          f"{fields['event'][0]!r})")
        if isinstance(event, dict) and fields["event"][0] != str(event.get("type", "")).replace(
                "\r", " ").replace("\n", " "):
            self.fail(ex, f"frame event: {fields['event'][0]!r} is not the event's type")


# ---------------------------------------------------------------------------------------------
# The node


def start_node(keel, workdir):
    data_dir = os.path.join(workdir, "data")
    config = os.path.join(workdir, "node.yaml")
    with open(config, "w", encoding="utf-8") as f:
        f.write(f"""data_dir: {json.dumps(data_dir)}
listen: 127.0.0.1:0
durability: none
heartbeat_ms: 1000
drain_ms: 1000
limits:
  max_body_bytes: {MAX_BODY_BYTES}
  max_subscribers: {MAX_SUBSCRIBERS}
  max_waiting_polls: 1
""")
    stderr_path = os.path.join(workdir, "node.stderr")
    stderr = open(stderr_path, "wb")
    proc = subprocess.Popen(
        [keel, "node", "-c", config, "--data-dir", data_dir, "--listen", "127.0.0.1:0",
         "--durability", "none"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    stderr.close()
    return proc, stderr_path


def wait_serving(proc, stderr_path, deadline_s=30.0):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        with open(stderr_path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        m = re.search(r"keel node: serving .* on (\S+):(\d+)\s*$", text, re.M)
        if m:
            return m.group(1), int(m.group(2))
        if proc.poll() is not None:
            raise RuntimeError(f"keel node exited with {proc.returncode}:\n{text}")
        time.sleep(0.05)
    raise RuntimeError(f"keel node did not say it was serving within {deadline_s} s")


def wait_ready(client, deadline_s=30.0):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        ex = client.send("GET", "/ready", timeout=2.0)
        if ex.status == 200:
            return
        time.sleep(0.05)
    raise RuntimeError("GET /ready did not answer 200")


def stop_node(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------------------------
# The scenarios

JSON = {"Content-Type": "application/json"}

ID1 = "3f1c2a4e-5b6d-4e7f-8a9b-0c1d2e3f4a5b"
ID2 = "3f1c2a4e-5b6d-4e7f-8a9b-0c1d2e3f4a5c"
ID3 = "3f1c2a4e-5b6d-4e7f-8a9b-0c1d2e3f4a5d"


def expect_eq(what, got, want):
    return None if got == want else f"{what} is {got!r}, expected {want!r}"


def run(client, check):
    c = client

    def call(method, target, body=None, headers=None, **kw):
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        return check.check(c.send(method, target, body, headers), **kw)

    def post(target, body, **kw):
        return call("POST", target, body, JSON, **kw)

    # ---- operational routes
    call("GET", "/healthz", expect=200, semantic=lambda b: expect_eq("status", b["status"], "ok"))
    call("GET", "/healthz?probe=1", expect=200)
    call("GET", "/ready", expect=200, semantic=lambda b: expect_eq("ready", b["ready"], True))
    call("GET", "/ready?x=y", expect=200)
    call("GET", "/metrics", expect=200,
         semantic=lambda ex: None if b"keel_node_" in ex.body else "no keel_node_ metric")
    call("GET", "/metrics?name[]=x", expect=200)

    # ---- appends
    post("/v1/streams/order-1?expected_version=no_stream",
         {"id": ID1, "type": "OrderPlaced", "data": {"total": 4200}, "metadata": {"by": "web"}},
         expect=200, semantic=lambda b: expect_eq("first_version", b["first_version"], 0)
         or expect_eq("duplicate", b["duplicate"], False))
    post("/v1/streams/order-1",
         {"id": ID1, "type": "OrderPlaced", "data": {"total": 4200}, "metadata": {"by": "web"}},
         expect=200, doc="same id, same event: the first result, duplicate true",
         semantic=lambda b: expect_eq("duplicate", b["duplicate"], True)
         or expect_eq("last_version", b["last_version"], 0))
    post("/v1/streams/order-1", {"id": ID1, "type": "OrderPlaced", "data": {"total": 1}},
         expect=409, error="duplicate_event_id")
    post("/v1/streams/order-1",
         {"expected_version": 0, "events": [
             {"id": ID2, "type": "OrderPaid", "data": None},
             {"id": ID3, "type": "OrderShipped", "data": [1, "two", 3.5], "metadata": None}]},
         expect=200, semantic=lambda b: expect_eq("first_version", b["first_version"], 1)
         or expect_eq("last_version", b["last_version"], 2))
    post("/v1/streams/order-1", {"expected_version": 0, "events": [{"type": "T", "data": 1}]},
         expect=409, error="wrong_expected_version",
         semantic=None)
    ex = c.send("POST", "/v1/streams/order-1?expected_version=7", '{"type":"T","data":1}', JSON)
    body = check.check(ex, expect=409, error="wrong_expected_version")
    if isinstance(body, dict) and body.get("actual_version") != 2:
        check.fail(ex, f"actual_version is {body.get('actual_version')!r}, expected 2")
    ex = c.send("POST", "/v1/streams/nowhere-1?expected_version=stream_exists",
                '{"type":"T","data":1}', JSON)
    body = check.check(ex, expect=409, error="wrong_expected_version")
    if isinstance(body, dict) and body.get("actual_version") != -1:
        check.fail(ex, f"actual_version is {body.get('actual_version')!r}, expected -1")
    post("/v1/streams/payment-1", {"events": [
        {"type": "PaymentMade", "data": {"amount": 10}},
        {"type": "Refunded", "data": {"amount": 10}}]}, expect=200)
    post("/v1/streams/other", {"type": "Misc", "data": "text"}, expect=200)
    post("/v1/streams/order%2F2", {"type": "OrderPlaced", "data": {}}, expect=200)
    call("GET", "/v1/streams/order%2F2", expect=200,
         semantic=lambda b: expect_eq("events[0].stream", b["events"][0]["stream"], "order/2"))
    post("/v1/streams/$keel-test", {"type": "T", "data": 1}, expect=403, error="system_stream")
    post("/v1/streams/%24keel-test", {"type": "T", "data": 1}, expect=403, error="system_stream")
    post("/v1/streams/order-1", '{"type": "T", "data": ', expect=400, error="bad_json")
    post("/v1/streams/order-1", '{"type": "T", "type": "U", "data": 1}', expect=400,
         error="bad_json")
    post("/v1/streams/order-1", '{"type": "T", "data": ' + "[" * 64 + "]" * 64 + "}",
         expect=400, error="bad_json", doc="nesting deeper than 64")
    post("/v1/streams/order-1", '{"type": "T", "data": 99999999999999999999999}', expect=400,
         error="invalid_argument", doc="an integer over 2^64-1")
    post("/v1/streams/order-1", "", expect=400, error="bad_json")
    post("/v1/streams/order-1", {"type": "T", "data": 1, "colour": "red"}, expect=400,
         error="invalid_argument")
    post("/v1/streams/order-1", {"data": 1}, expect=400, error="invalid_argument")
    post("/v1/streams/order-1", {"type": "T", "data": 1, "id": "00000000-0000-0000-0000-000000000000"},
         expect=400, error="invalid_argument")
    post("/v1/streams/order-1", [1, 2], expect=400, error="invalid_argument")
    post("/v1/streams/order-1", {"events": []}, expect=400, error="invalid_argument")
    post("/v1/streams/order-1?expected_version=2",
         {"expected_version": 2, "events": [{"type": "T", "data": 1}]}, expect=400,
         error="invalid_argument", doc="expected_version in both the query and the body")
    post("/v1/streams/order-1", {"events": [{"id": ID1, "type": "T", "data": 1},
                                            {"id": ID1, "type": "T", "data": 2}]},
         expect=400, error="invalid_argument", doc="one id twice in a batch")
    post("/v1/streams/order-1?expected_version=later", {"type": "T", "data": 1}, expect=400,
         error="invalid_argument")
    post("/v1/streams/order-1?colour=red", {"type": "T", "data": 1}, expect=400,
         error="invalid_argument")
    post("/v1/streams/bad%ZZname", {"type": "T", "data": 1}, expect=400,
         error="invalid_stream_name")
    post("/v1/streams/bad%01name", {"type": "T", "data": 1}, expect=400,
         error="invalid_stream_name")
    call("POST", "/v1/streams/order-1", '{"type":"T","data":1}', {"Content-Type": "text/plain"},
         expect=415, error="unsupported_media_type")
    call("POST", "/v1/streams/order-1", '{"type":"T","data":1}', None, expect=415,
         error="unsupported_media_type", doc="no Content-Type")
    call("POST", "/v1/streams/order-1", '{"type":"T","data":1}',
         {"Content-Type": "application/json; charset=latin-1"}, expect=415,
         error="unsupported_media_type")
    post("/v1/streams/vendor-1", '{"type":"T","data":1}', expect=200)
    call("POST", "/v1/streams/vendor-1", '{"type":"T","data":1}',
         {"Content-Type": "application/vnd.keel+json; charset=UTF-8"}, expect=200)
    big = json.dumps({"type": "Big", "data": "x" * (MAX_BODY_BYTES + 1000)})
    post("/v1/streams/big-1", big, expect=413, error="payload_too_large")
    # docs/api.md and the spec: 1 to 10000 events in one append.
    batch = json.dumps({"events": [{"type": "B", "data": i} for i in range(1001)]},
                       separators=(",", ":"))
    post("/v1/streams/bulk-1", batch, expect=200,
         doc="docs/api.md 'events: 1 to 10000 events', openapi AppendBatch.events maxItems 10000")

    # ---- reads
    call("GET", "/v1/streams/order-1", expect=200,
         semantic=lambda b: expect_eq("versions", [e["version"] for e in b["events"]], [0, 1, 2])
         or expect_eq("next", b["next"], None)
         or expect_eq("data_format", b["events"][0]["data_format"], "json")
         or expect_eq("metadata", b["events"][0]["metadata"], {"by": "web"}))
    call("GET", "/v1/streams/order-1?limit=2", expect=200,
         semantic=lambda b: expect_eq("next", b["next"], {"from": 2}))
    call("GET", "/v1/streams/order-1?from=2&limit=2", expect=200,
         semantic=lambda b: expect_eq("versions", [e["version"] for e in b["events"]], [2])
         or expect_eq("next", b["next"], None))
    call("GET", "/v1/streams/order-1?direction=backwards&limit=2", expect=200,
         semantic=lambda b: expect_eq("versions", [e["version"] for e in b["events"]], [2, 1])
         or expect_eq("next", b["next"], {"from": 0}))
    call("GET", "/v1/streams/order-1?direction=backwards&from=end", expect=200)
    call("GET", "/v1/streams/order-1?direction=forwards&from=start&limit=1000", expect=200)
    call("GET", "/v1/streams/never-written-1", expect=200,
         semantic=lambda b: expect_eq("page", b, {"events": [], "next": None}))
    call("GET", "/v1/streams/order-1?from=end", expect=400, error="invalid_argument")
    call("GET", "/v1/streams/order-1?limit=0", expect=400, error="invalid_argument")
    call("GET", "/v1/streams/order-1?limit=1001", expect=400, error="invalid_argument")
    call("GET", "/v1/streams/order-1?limit=2&limit=3", expect=400, error="invalid_argument")
    call("GET", "/v1/streams/order-1?direction=sideways", expect=400, error="invalid_argument")
    call("GET", "/v1/streams/order-1?colour=red", expect=400, error="invalid_argument")
    call("GET", "/v1/streams/bad%ZZ", expect=400, error="invalid_stream_name")
    call("GET", "/v1/streams/" + "n" * 1025, expect=400, error="invalid_stream_name")

    # $all, paged to its end: positions go up by one, no gap; then a filtered read, paged
    for base, gap_free in (("/v1/all?limit=50", True), ("/v1/all?category=order&limit=1", False)):
        positions = []
        target = base
        for _ in range(2000):
            page = call("GET", target, expect=200)
            if not isinstance(page, dict):
                break
            positions += [e["position"] for e in page["events"]]
            if page["next"] is None:
                break
            target = f"{base}&from={page['next']['from']}"
        else:
            report(f"FAIL GET {base}: next is never null")
        want = list(range(len(positions))) if gap_free else sorted(set(positions))
        if positions != want or not positions:
            report(f"FAIL GET {base} paged: positions {positions[:40]}, expected {want[:40]}")
    call("GET", "/v1/all?category=order", expect=200,
         semantic=lambda b: None if b["events"] and all(
             e["stream"].split("-")[0] == "order" for e in b["events"]) else "not only order-*")
    call("GET", "/v1/all?category=order&category=payment&type=Refunded", expect=200,
         semantic=lambda b: expect_eq("types", [e["type"] for e in b["events"]], ["Refunded"]))
    call("GET", "/v1/all?prefix=order-&type=OrderPaid&type=OrderShipped", expect=200,
         semantic=lambda b: expect_eq("types", [e["type"] for e in b["events"]],
                                      ["OrderPaid", "OrderShipped"]))
    call("GET", "/v1/all?direction=backwards&limit=3", expect=200,
         semantic=lambda b: None if [e["position"] for e in b["events"]] == sorted(
             [e["position"] for e in b["events"]], reverse=True) else "not backwards")
    call("GET", "/v1/all?direction=backwards&from=end&system=false&limit=1000", expect=200)
    call("GET", "/v1/all?from=start&direction=forwards&limit=1", expect=200)
    call("GET", "/v1/all?system=maybe", expect=400, error="invalid_argument")
    call("GET", "/v1/all?category=", expect=400, error="invalid_argument")
    call("GET", "/v1/all?from=abc", expect=400, error="invalid_argument")
    call("GET", "/v1/all?stream=order-1", expect=400, error="invalid_argument")
    call("GET", "/v1/all?" + "&".join(["type=t"] * 101), expect=400, error="invalid_argument")

    # ---- metadata
    post("/v1/streams/meta-1", {"events": [{"type": "M", "data": i} for i in range(5)]}, expect=200)
    call("GET", "/v1/streams/meta-1/metadata", expect=200,
         semantic=lambda b: expect_eq("metadata", b, {"max_count": None, "max_age_ms": None,
                                                      "truncate_before": None}))
    call("PUT", "/v1/streams/meta-1/metadata", {"max_count": 2, "max_age_ms": None}, JSON,
         expect=204)
    call("GET", "/v1/streams/meta-1/metadata", expect=200,
         semantic=lambda b: expect_eq("metadata", b, {"max_count": 2, "max_age_ms": None,
                                                      "truncate_before": None}))
    call("GET", "/v1/streams/meta-1", expect=200,
         semantic=lambda b: expect_eq("versions", [e["version"] for e in b["events"]], [3, 4]))
    call("PUT", "/v1/streams/meta-1/metadata",
         {"max_count": 100, "max_age_ms": 9223372036854, "truncate_before": 1}, JSON, expect=204)
    call("PUT", "/v1/streams/meta-1/metadata", {}, JSON, expect=204)
    call("GET", "/v1/streams/meta-1/metadata", expect=200,
         semantic=lambda b: expect_eq("max_count", b["max_count"], None))
    call("GET", "/v1/streams/never-written-2/metadata", expect=200)
    call("GET", "/v1/streams/$keel-node-groups/metadata", expect=200)
    call("PUT", "/v1/streams/meta-1/metadata", {"max_count": 1, "colour": 1}, JSON, expect=400,
         error="invalid_argument")
    call("PUT", "/v1/streams/meta-1/metadata", {"max_age_ms": 9223372036855}, JSON, expect=400,
         error="invalid_argument")
    call("PUT", "/v1/streams/meta-1/metadata", {"max_count": -1}, JSON, expect=400,
         error="invalid_argument")
    call("PUT", "/v1/streams/meta-1/metadata", "{", JSON, expect=400, error="bad_json")
    call("PUT", "/v1/streams/meta-1/metadata", "{}", {"Content-Type": "text/plain"}, expect=415,
         error="unsupported_media_type")
    call("PUT", "/v1/streams/$keel-x/metadata", {}, JSON, expect=403, error="system_stream")
    call("GET", "/v1/streams/meta-1/metadata?x=1", expect=400, error="invalid_argument")
    call("GET", "/v1/streams/bad%ZZ/metadata", expect=400, error="invalid_stream_name")

    # ---- deletes
    post("/v1/streams/temp-1", {"events": [{"type": "T", "data": 0}, {"type": "T", "data": 1}]},
         expect=200)
    call("DELETE", "/v1/streams/temp-1?expected_version=5", expect=409,
         error="wrong_expected_version")
    call("DELETE", "/v1/streams/temp-1?hard=yes", expect=400, error="invalid_argument")
    call("DELETE", "/v1/streams/$keel-x", expect=403, error="system_stream")
    call("DELETE", "/v1/streams/temp-1?expected_version=1&hard=false", expect=204)
    call("GET", "/v1/streams/temp-1", expect=200,
         semantic=lambda b: expect_eq("events", b["events"], []))
    post("/v1/streams/temp-1", {"type": "T", "data": 2}, expect=200,
         doc="appending after a soft delete continues the versions",
         semantic=lambda b: expect_eq("first_version", b["first_version"], 2))
    call("DELETE", "/v1/streams/temp-1?hard=true", expect=204)
    call("GET", "/v1/streams/temp-1", expect=410, error="stream_deleted")
    post("/v1/streams/temp-1", {"type": "T", "data": 3}, expect=410, error="stream_deleted")
    call("DELETE", "/v1/streams/temp-1", expect=410, error="stream_deleted")
    call("PUT", "/v1/streams/temp-1/metadata", {"max_count": 1}, JSON, expect=410,
         error="stream_deleted")
    ex = c.subscribe("/v1/streams/temp-1/subscribe")
    check.check(ex, expect=410, error="stream_deleted",
                doc="docs/api.md: 'Errors known before streaming starts (bad parameters, a "
                    "hard-deleted stream) are ordinary error responses'; openapi subscribeStream 410")

    # ---- subscriptions
    def first_event(want_id, key):
        def complaint(ex):
            event = getattr(ex, "sse_event", None)
            fields = getattr(ex, "sse_fields", {})
            if event is None:
                return f"the first frame is not an event: {ex.sse_frame!r}"
            if fields["id"] != [str(event[key])]:
                return f"frame id {fields['id']} is not the event's {key} {event[key]}"
            return expect_eq(f"first {key}", event[key], want_id)
        return complaint

    check.check(c.subscribe("/v1/streams/order-1/subscribe"), expect=200,
                semantic=first_event(0, "version"))
    check.check(c.subscribe("/v1/streams/order-1/subscribe?from=1"), expect=200,
                semantic=first_event(1, "version"))
    check.check(c.subscribe("/v1/streams/order-1/subscribe?from=start", {"Last-Event-ID": "1"}),
                expect=200, semantic=first_event(2, "version"))
    check.check(c.subscribe("/v1/streams/never-written-3/subscribe?from=end"), expect=200)
    check.check(c.subscribe("/v1/streams/order-1/subscribe?from=later"), expect=400,
                error="invalid_argument")
    check.check(c.subscribe("/v1/streams/order-1/subscribe", {"Last-Event-ID": "abc"}),
                expect=400, error="invalid_argument")
    check.check(c.subscribe("/v1/streams/order-1/subscribe?limit=1"), expect=400,
                error="invalid_argument")
    check.check(c.subscribe("/v1/streams/bad%ZZ/subscribe"), expect=400,
                error="invalid_stream_name")
    check.check(c.subscribe("/v1/all/subscribe"), expect=200, semantic=first_event(0, "position"))
    check.check(c.subscribe("/v1/all/subscribe?category=payment&type=Refunded"), expect=200,
                semantic=lambda ex: None if getattr(ex, "sse_event", {}).get("type") == "Refunded"
                else f"first frame {ex.sse_frame!r}")
    check.check(c.subscribe("/v1/all/subscribe?from=end&prefix=order-&system=true"), expect=200)
    check.check(c.subscribe("/v1/all/subscribe?from=nope"), expect=400, error="invalid_argument")
    check.check(c.subscribe("/v1/all/subscribe?direction=backwards"), expect=400,
                error="invalid_argument")
    check.check(c.subscribe("/v1/all/subscribe", {"Last-Event-ID": "18446744073709551615"}),
                expect=400, error="invalid_argument")

    # ---- consumer groups
    group = {"categories": ["order"], "strategy": "round_robin", "start": "start",
             "ack_timeout_ms": 60000, "retry_backoff_ms": 0, "max_retry_backoff_ms": 0}
    call("GET", "/v1/groups", expect=200)
    call("PUT", "/v1/groups/shipping", group, JSON, expect=200,
         semantic=lambda b: expect_eq("name", b["name"], "shipping")
         or expect_eq("categories", b["categories"], ["order"]))
    call("PUT", "/v1/groups/shipping", group, JSON, expect=200, doc="PUT is idempotent")
    call("PUT", "/v1/groups/shipping", {"categories": ["payment"]}, JSON, expect=409,
         error="conflict")
    call("PUT", "/v1/groups/defaults", None, None, expect=200)
    call("PUT", "/v1/groups/defaults", {}, JSON, expect=200,
         doc="docs/api.md: no body is the same as {}; PUT returns a group that exists with the "
             "same settings")
    call("PUT", "/v1/groups/spaced", '{"categories":["order"]}', JSON, expect=200)
    call("PUT", "/v1/groups/spaced", '{"categories": ["order"], "strategy": "round_robin"}', JSON,
         expect=200, doc="docs/api.md: the same settings (spelt differently) are the same group")
    call("PUT", "/v1/groups/pinned.1", {"strategy": "pinned", "start": 0, "max_in_flight": 1,
                                        "event_types": ["X"], "stream_prefixes": ["a-"]},
         JSON, expect=200)
    call("PUT", "/v1/groups/bad", {"stream": "order-1"}, JSON, expect=400,
         error="invalid_argument")
    call("PUT", "/v1/groups/bad", {"strategy": "random"}, JSON, expect=400,
         error="invalid_argument")
    call("PUT", "/v1/groups/bad", {"max_in_flight": 0}, JSON, expect=400, error="invalid_argument")
    call("PUT", "/v1/groups/bad", "[", JSON, expect=400, error="bad_json")
    call("PUT", "/v1/groups/bad", "{}", {"Content-Type": "text/plain"}, expect=415,
         error="unsupported_media_type")
    call("PUT", "/v1/groups/bad%20name", {}, JSON, expect=400, error="invalid_argument")
    call("GET", "/v1/groups/shipping", expect=200)
    call("GET", "/v1/groups", expect=200,
         semantic=lambda b: None if {"shipping", "defaults"} <= {g["name"] for g in b["groups"]}
         else "shipping and defaults are not listed")
    call("GET", "/v1/groups/nope", expect=404, error="not_found")
    call("GET", "/v1/groups/bad%20name", expect=400, error="invalid_argument",
         doc="docs/api.md: a bad group name is 400 invalid_argument")
    call("GET", "/v1/groups?colour=red", expect=400, error="invalid_argument",
         doc="docs/api.md: an unknown query parameter is 400 invalid_argument")
    call("GET", "/v1/streams/$keel-node-groups", expect=200)
    call("GET", "/v1/all?system=true&direction=backwards&limit=1000", expect=200,
         semantic=lambda b: None if any(e["stream"].startswith("$") for e in b["events"])
         else "system=true shows no $ stream")
    call("GET", "/v1/all?direction=backwards&limit=1000", expect=200,
         semantic=lambda b: None if not any(e["stream"].startswith("$") for e in b["events"])
         else "a $ stream without system=true")

    # deliveries: order-1's three events (the group's category is order)
    deliveries = []
    deadline = time.monotonic() + 20
    while len(deliveries) < 3 and time.monotonic() < deadline:
        got = post("/v1/groups/shipping/poll", {"member": "w1", "max": 10, "wait_ms": 2000},
                   expect=200)
        if isinstance(got, dict):
            deliveries += [d for d in got["deliveries"] if d["event"]["stream"] == "order-1"]
    by_version = {d["event"]["version"]: d for d in deliveries}
    if sorted(by_version) != [0, 1, 2]:
        report(f"FAIL POST /v1/groups/shipping/poll: delivered order-1 versions "
                        f"{sorted(by_version)}, expected [0, 1, 2]")
    else:
        d0, d1, d2 = by_version[0]["id"], by_version[1]["id"], by_version[2]["id"]
        post("/v1/groups/shipping/ack", {"member": "w1", "ids": [d0]}, expect=200,
             semantic=lambda b: expect_eq("settled", b["settled"], [d0]))
        post("/v1/groups/shipping/ack", {"member": "w1", "ids": [d0]}, expect=200,
             semantic=lambda b: expect_eq("failed ids", [f["id"] for f in b["failed"]], [d0]))
        post("/v1/groups/shipping/nack", {"member": "w1", "ids": [d1], "action": "park",
                                          "reason": "carrier down"}, expect=200,
             semantic=lambda b: expect_eq("settled", b["settled"], [d1]))
        post("/v1/groups/shipping/nack", {"member": "w1", "ids": [d2], "action": "retry",
                                          "reason": None}, expect=200,
             semantic=lambda b: expect_eq("settled", b["settled"], [d2]))
        again = []
        deadline = time.monotonic() + 10
        while not again and time.monotonic() < deadline:
            got = post("/v1/groups/shipping/poll", {"member": "w1", "wait_ms": 2000}, expect=200)
            if isinstance(got, dict):
                again = [d for d in got["deliveries"] if d["event"]["id"] == ID3]
        if not again or again[0]["attempt"] != 2:
            report(f"FAIL POST /v1/groups/shipping/poll: the retried event came back as "
                            f"{again!r}, expected attempt 2")
        else:
            post("/v1/groups/shipping/nack", {"member": "w1", "ids": [again[0]["id"]],
                                              "action": "skip"}, expect=200)

        def parked_record(b):
            if len(b["events"]) != 1:
                return f"{len(b['events'])} parked events, expected 1"
            data = b["events"][0]["data"]
            keys = {"stream", "version", "position", "type", "reason", "deliveries"}
            if not isinstance(data, dict) or not keys <= set(data):
                return f"the park record {data!r} lacks some of {sorted(keys)}"
            if "carrier down" not in str(data["reason"]):
                return f"the park record's reason {data['reason']!r} lacks the nack's reason"
            return expect_eq("parked stream/version", (data["stream"], data["version"]),
                             ("order-1", 1))

        call("GET", "/v1/groups/shipping/parked", expect=200, semantic=parked_record)
        call("GET", "/v1/groups/shipping/parked?from=0&limit=1", expect=200,
             semantic=lambda b: expect_eq("next", b["next"], {"from": 1}))
        call("GET", "/v1/streams/$keel-group-shipping-parked", expect=200)
        call("POST", "/v1/groups/shipping/parked/replay", None, None, expect=200,
             semantic=lambda b: expect_eq("replayed", b["replayed"], 1))
        # Deliveries go to the members round robin as they become ready: either may hold it.
        replayed, member = [], "w2"
        deadline = time.monotonic() + 10
        while not replayed and time.monotonic() < deadline:
            member = "w2" if member == "w1" else "w1"
            got = post("/v1/groups/shipping/poll", {"member": member, "max": 1, "wait_ms": 500},
                       expect=200)
            if isinstance(got, dict):
                replayed = got["deliveries"]
        if not replayed or not replayed[0]["replayed"] or replayed[0]["event"]["id"] != ID2:
            report(f"FAIL POST /v1/groups/shipping/poll: after replay got {replayed!r}, "
                   f"expected the parked event with replayed true")
        else:
            post("/v1/groups/shipping/ack", {"member": member, "ids": [replayed[0]["id"]]},
                 expect=200)
    call("GET", "/v1/groups/shipping", expect=200,
         semantic=lambda b: None if b["stats"]["parked"] >= 1 else "stats.parked is 0")
    call("GET", "/v1/groups/shipping/parked?from=x", expect=400, error="invalid_argument")
    call("GET", "/v1/groups/shipping/parked?limit=0", expect=400, error="invalid_argument")
    call("GET", "/v1/groups/nope/parked", expect=404, error="not_found")
    call("GET", "/v1/groups/bad%20name/parked", expect=400, error="invalid_argument")
    call("POST", "/v1/groups/nope/parked/replay", None, None, expect=404, error="not_found")
    call("POST", "/v1/groups/shipping/parked/replay?all=true", None, None, expect=400,
         error="invalid_argument", doc="docs/api.md: an unknown query parameter is 400")
    post("/v1/groups/shipping/poll", {}, expect=400, error="invalid_argument")
    post("/v1/groups/shipping/poll", {"member": "bad name"}, expect=400, error="invalid_argument")
    post("/v1/groups/shipping/poll", {"member": "w1", "max": 0}, expect=400,
         error="invalid_argument")
    post("/v1/groups/shipping/poll", {"member": "w1", "wait_ms": 60001}, expect=400,
         error="invalid_argument")
    post("/v1/groups/shipping/poll", {"member": "w1", "max": 1.0}, expect=400,
         error="invalid_argument")
    post("/v1/groups/shipping/poll", "{member}", expect=400, error="bad_json")
    call("POST", "/v1/groups/shipping/poll", '{"member":"w1"}', {"Content-Type": "text/plain"},
         expect=415, error="unsupported_media_type")
    post("/v1/groups/nope/poll", {"member": "w1"}, expect=404, error="not_found")
    post("/v1/groups/shipping/ack", {"member": "w1", "ids": []}, expect=400,
         error="invalid_argument")
    post("/v1/groups/shipping/ack", {"member": "w1", "ids": [1], "action": "park"}, expect=400,
         error="invalid_argument")
    call("POST", "/v1/groups/shipping/ack", '{"member":"w1","ids":[1]}', None, expect=415,
         error="unsupported_media_type")
    post("/v1/groups/nope/ack", {"member": "w1", "ids": [1]}, expect=404, error="not_found")
    post("/v1/groups/shipping/nack", {"member": "w1", "ids": [1], "action": "explode"},
         expect=400, error="invalid_argument")
    post("/v1/groups/shipping/nack", {"member": "w1", "ids": [1]}, expect=400,
         error="invalid_argument")
    post("/v1/groups/shipping/nack", {"member": "w1", "ids": [1], "action": "park",
                                      "reason": "r" * 1025}, expect=400, error="invalid_argument")
    call("POST", "/v1/groups/shipping/nack", '{"member":"w1","ids":[1],"action":"skip"}',
         {"Content-Type": "text/plain"}, expect=415, error="unsupported_media_type")
    post("/v1/groups/nope/nack", {"member": "w1", "ids": [1], "action": "skip"}, expect=404,
         error="not_found")
    call("DELETE", "/v1/groups/shipping", expect=204)
    call("DELETE", "/v1/groups/shipping", expect=404, error="not_found")
    call("GET", "/v1/groups/shipping", expect=404, error="not_found")
    call("DELETE", "/v1/groups/bad%20name", expect=400, error="invalid_argument",
         doc="docs/api.md: a bad group name is 400 invalid_argument")

    # ---- projections: reports kept by name, lag against the head
    def put(target, body, **kw):
        return call("PUT", target, body, JSON, **kw)

    put("/v1/projections/orders", {"position": 1, "applied": 1, "live": False,
                                   "state": {"orders": 1}, "interval_ms": 1000}, expect=200,
        semantic=lambda b: expect_eq("lag", b["lag"], b["head"] - 1))
    put("/v1/projections/orders", {"position": 0}, expect=200,
        semantic=lambda b: expect_eq("state, error", (b["state"], b["error"]), (None, None)))
    call("GET", "/v1/projections", expect=200,
         semantic=lambda b: expect_eq("names", [p["name"] for p in b["projections"]], ["orders"]))
    call("GET", "/v1/projections/orders", expect=200,
         semantic=lambda b: expect_eq("position", b["position"], 0))
    put("/v1/projections/orders", {}, expect=400, error="invalid_argument")
    put("/v1/projections/orders", {"position": 1, "state": [1]}, expect=400,
        error="invalid_argument")
    put("/v1/projections/orders", {"position": 1, "state": {"x": "y" * 5000}}, expect=400,
        error="invalid_argument")
    put("/v1/projections/orders", {"position": 1, "checkpoint": 1}, expect=400,
        error="invalid_argument")
    call("PUT", "/v1/projections/orders", '{"position":1}', {"Content-Type": "text/plain"},
         expect=415, error="unsupported_media_type")
    put("/v1/projections/bad%20name", {"position": 1}, expect=400, error="invalid_argument")
    call("GET", "/v1/projections/nope", expect=404, error="not_found")
    call("DELETE", "/v1/projections/orders", expect=204)
    call("DELETE", "/v1/projections/orders", expect=404, error="not_found")
    call("GET", "/v1/projections?x=1", expect=400, error="invalid_argument")

    # ---- 405, 404, the HTTP layer's own refusals
    for method, target in [("PUT", "/v1/all"), ("DELETE", "/v1/groups"), ("POST", "/v1/groups/g"),
                           ("GET", "/v1/groups/g/poll"), ("PATCH", "/v1/streams/s"),
                           ("POST", "/v1/streams/s/metadata"), ("PUT", "/v1/all/subscribe"),
                           ("DELETE", "/v1/groups/g/parked"), ("GET", "/v1/groups/g/parked/replay"),
                           ("POST", "/v1/projections"), ("POST", "/v1/projections/p"),
                           ("POST", "/metrics"), ("HEAD", "/healthz"), ("OPTIONS", "/v1/all"),
                           ("DELETE", "/ready")]:
        call(method, target, expect=405, error=None if method == "HEAD" else "method_not_allowed")
    call("get", "/v1/all", expect=405, error="method_not_allowed",
         doc="docs/api.md: 'Methods are case-sensitive'; a known path with another method is 405")
    call("BREW", "/v1/all", expect=405, error="method_not_allowed",
         doc="docs/api.md: 'A known path with another method is 405 method_not_allowed'")
    for target in ["/", "/v2/all", "/v1", "/v1/streams", "/v1/streams/", "/v1/streams/a/b",
                   "/v1/streams/a/metadata/x", "/v1/all/", "//metrics", "/metrics/",
                   "/V1/all", "/v1/groups/g/parked/replay/x", "/v1/groups/g/other",
                   "/v1/projections/p/x"]:
        call("GET", target, expect=404, error="not_found")
    # A malformed body (a bad chunk size): every error is a JSON body with a documented code.
    status, headers, body = c.raw(
        b"POST /v1/streams/s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n")
    ex = Exchange("POST", "/v1/streams/s", {"Transfer-Encoding": "chunked"}, b"ZZ (bad chunk)")
    ex.status, ex.headers, ex.body = status, headers, body
    check.check(ex, expect=400,
                doc="docs/api.md 'Errors': every error is a JSON body whose code is in the table")

    # ---- limits the node is configured with here: statuses the spec must document
    held = []
    try:
        for _ in range(MAX_SUBSCRIBERS + 20):
            conn = http.client.HTTPConnection(c.host, c.port, timeout=SSE_TIMEOUT_S)
            conn.request("GET", "/v1/streams/order-1/subscribe")
            resp = conn.getresponse()
            if resp.status == 200:
                held.append(conn)
                continue
            ex = Exchange("GET", "/v1/streams/order-1/subscribe", {}, None)
            ex.status = resp.status
            ex.headers = {k.lower(): v for k, v in resp.getheaders()}
            ex.body = resp.read()
            conn.close()
            check.check(ex, expect=503, error="unavailable",
                        doc=f"limits.max_subscribers: {MAX_SUBSCRIBERS}, {len(held)} open")
            break
        else:
            report(f"FAIL {MAX_SUBSCRIBERS + 20} subscriptions open with max_subscribers "
                   f"{MAX_SUBSCRIBERS}: no 503 (the test's premise; not a spec finding)")
    finally:
        for conn in held:
            conn.close()

    call("PUT", "/v1/groups/idle", {"categories": ["nothing"]}, JSON, expect=200)
    results = {}

    def long_poll(member):
        results[member] = c.send("POST", "/v1/groups/idle/poll",
                                 json.dumps({"member": member, "wait_ms": 3000}), JSON)

    threads = []
    for member in ("p1", "p2", "p3"):
        t = threading.Thread(target=long_poll, args=(member,))
        t.start()
        threads.append(t)
        time.sleep(0.3)
    for t in threads:
        t.join()
    statuses = sorted(ex.status for ex in results.values())
    for ex in results.values():
        check.check(ex, expect=(200, 503),
                    doc="limits.max_waiting_polls: 1 (one long poll running, one queued)")
    if 503 not in statuses:
        report(f"FAIL POST /v1/groups/idle/poll x3 with max_waiting_polls 1: statuses "
                        f"{statuses}, expected a 503 (the test's premise; not a spec finding)")
    call("DELETE", "/v1/groups/idle", expect=204)
    call("GET", "/ready", expect=200)


def main():
    if len(sys.argv) != 3:
        print(f"usage: {sys.argv[0]} KEEL_BINARY OPENAPI_YAML", file=sys.stderr)
        return 2
    keel, spec_path = sys.argv[1], sys.argv[2]
    spec = Spec(spec_path)
    problems = spec.audit()
    for problem in problems:
        report(f"FAIL spec: {problem}")
    check = Checker(spec)

    workdir = tempfile.mkdtemp(prefix="keel-openapi-test-")
    proc = None
    stderr_path = None
    try:
        proc, stderr_path = start_node(keel, workdir)
        host, port = wait_serving(proc, stderr_path)
        client = Client(host, port)
        wait_ready(client)
        run(client, check)
        if proc.poll() is not None:
            report(f"FAIL keel node exited during the test with {proc.returncode}")
    except Exception as e:  # the run itself broke: say so, with the node's log
        import traceback
        traceback.print_exc()
        report(f"FAIL the test could not run: {e!r}")
    finally:
        if proc is not None:
            stop_node(proc)
        if failures and stderr_path and os.path.exists(stderr_path):
            with open(stderr_path, "rb") as f:
                log = f.read().decode("utf-8", "replace").strip().splitlines()
            print("---- keel node stderr (last 30 lines) ----")
            print("\n".join(log[-30:]))
        shutil.rmtree(workdir, ignore_errors=True)

    uncovered = sorted(set(spec.operations) - check.covered)
    if uncovered:
        report("FAIL operations never answered 2xx: " + ", ".join(
            f"{op} ({' '.join(spec.operations[op])})" for op in uncovered))
    print(f"node_openapi_test: {check.requests} requests, "
          f"{len(check.covered)}/{len(spec.operations)} operations answered 2xx, "
          f"{len(failures)} failure(s), {len(notes)} note(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
