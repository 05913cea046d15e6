#!/usr/bin/env python3
"""Real Kafka clients (kcat, librdkafka through confluent_kafka) against a real `keel node`.

    /usr/bin/python3 tests/e2e/kafka_clients_test.py KEEL_BINARY

(Debian's python3: it is the one with confluent_kafka; the stdlib and confluent_kafka only.)

Each case starts its own `keel node` with a Kafka listener on a temporary data dir:

  kcat        kcat -L lists the broker and the topics; kcat -P then kcat -C -e round trip keys,
              values, headers and offsets exactly for every compression codec.
  producer    librdkafka producer with acks=all: every delivery report succeeds, offsets are
              dense per partition, a consumer reads back everything in offset order, each key's
              values in produced order on one partition.
  bridge      events appended over HTTP are read by Kafka (key null, value = data bytes,
              headers keel.type / keel.id); records produced by Kafka are read over HTTP (type,
              data, metadata.kafka) and over Server-Sent Events, and back by Kafka exactly.
  group       3 consumer-group member processes (this script with --member) share a 6-partition
              topic; one is killed with SIGKILL, one leaves cleanly; the last one must consume
              everything (no offset skipped) and commit it; the committed offsets survive a
              node restart.
  crash       the node is killed with SIGKILL under acks=all production; after a restart every
              acknowledged record is at the offset its delivery report named, byte for byte, and
              offsets are dense per partition.
  idempotent  an idempotent producer goes on through a SIGKILL and restart of the node: every
              record is delivered, and in the topic exactly once.

One line per passed case, every failure printed with what was expected; exit status 1 if any
case failed, 0 otherwise.
"""

import hashlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

DEFAULT_PARTITIONS = 3
CHILDREN = []  # every process this script started, killed at the end if still running


class CaseFailed(Exception):
    """A case cannot go on (its node did not start, a deadline passed...)."""


class Case:
    def __init__(self, name):
        self.name = name
        self.errors = []

    def fail(self, message):
        self.errors.append(message)
        print(f"FAIL {self.name}: {message}", flush=True)

    def check(self, ok, message):
        if not ok:
            self.fail(message)
        return ok

    def eq(self, what, got, want):
        return self.check(got == want, f"{what} is {shorten(got)}, expected {shorten(want)}")

    def fatal(self, message):
        raise CaseFailed(message)


def shorten(value, limit=600):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def log(message):
    print(f"  {message}", flush=True)


def deadline_after(seconds):
    return time.monotonic() + seconds


def spawn(argv, **kwargs):
    proc = subprocess.Popen(argv, **kwargs)
    CHILDREN.append(proc)
    return proc


def tail(path, lines=30):
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"({path}: {e})"
    return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------------------------------------
# The node


class Node:
    """One `keel node` on `root`/data; the Kafka port is chosen on the first start and kept."""

    def __init__(self, keel, root):
        self.keel = keel
        self.root = root
        self.data_dir = os.path.join(root, "data")
        self.kafka_port = 0
        self.http_port = None
        self.proc = None
        self.starts = 0
        self.stderr_path = None

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.kafka_port}"

    def start(self, deadline_s=60.0):
        """Starts the node and waits for both listeners and GET /ready. A binary missing or busy
        (being relinked) and a port still held by the previous process are retried."""
        deadline = deadline_after(deadline_s)
        while True:
            self.starts += 1
            config = os.path.join(self.root, f"node-{self.starts}.yaml")
            with open(config, "w", encoding="utf-8") as f:
                f.write(f"""data_dir: {json.dumps(self.data_dir)}
listen: 127.0.0.1:0
durability: every_commit
drain_ms: 2000
kafka:
  listen: 127.0.0.1:{self.kafka_port}
  default_partitions: {DEFAULT_PARTITIONS}
  initial_rebalance_delay_ms: 300
""")
            self.stderr_path = os.path.join(self.root, f"node-{self.starts}.stderr")
            with open(self.stderr_path, "wb") as err:
                try:
                    self.proc = spawn([self.keel, "node", "-c", config], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=err)
                except OSError as e:  # ENOENT / ETXTBSY while the binary is relinked
                    if time.monotonic() > deadline:
                        raise CaseFailed(f"cannot run {self.keel}: {e}")
                    time.sleep(1.0)
                    continue
            http_port = kafka_port = None
            while time.monotonic() < deadline:
                text = tail(self.stderr_path, 1000)
                for line in text.splitlines():
                    if line.startswith("keel node: serving ") and " on " in line:
                        http_port = int(line.rsplit(":", 1)[1])
                    elif line.startswith("keel node: kafka on "):
                        kafka_port = int(line.rsplit(":", 1)[1])
                if http_port and kafka_port:
                    break
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
            if http_port and kafka_port:
                break
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
                raise CaseFailed(f"keel node did not say where it serves within {deadline_s} s:\n"
                                 f"{tail(self.stderr_path)}")
            text = tail(self.stderr_path)
            if "in use" not in text or time.monotonic() > deadline:
                raise CaseFailed(f"keel node exited with {self.proc.returncode}:\n{text}")
            # The fixed Kafka port still held: retried, but worth a look (SO_REUSEADDR?).
            log(f"NOTE keel node exited with {self.proc.returncode} at start, retrying: "
                f"{text.strip().splitlines()[-1]}")
            time.sleep(0.5)
        if self.kafka_port and kafka_port != self.kafka_port:
            raise CaseFailed(f"kafka listener on {kafka_port}, configured {self.kafka_port}")
        self.kafka_port = kafka_port
        self.http_port = http_port
        while True:
            try:
                status, _ = self.http("GET", "/ready", timeout=2.0)
                if status == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                raise CaseFailed("GET /ready never answered 200")
            time.sleep(0.05)

    def stop(self, timeout_s=30.0):
        """SIGTERM; the exit status (None when it had to be killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def http(self, method, target, body=None, timeout=15.0):
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
        try:
            headers = {}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, target, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = raw
            return resp.status, parsed
        finally:
            conn.close()

    def read_stream(self, case, stream, limit=1000):
        status, body = self.http("GET", f"/v1/streams/{stream}?from=0&limit={limit}")
        if status != 200 or not isinstance(body, dict):
            case.fatal(f"GET /v1/streams/{stream} answered {status} {shorten(body)}")
        return body["events"]


def run_case(keel, tmp, name, fn):
    case = Case(name)
    root = os.path.join(tmp, name)
    os.makedirs(root)
    nodes = []

    def new_node():
        node = Node(keel, os.path.join(root, f"node{len(nodes)}"))
        os.makedirs(node.root)
        nodes.append(node)
        return node

    started = time.monotonic()
    try:
        fn(case, root, new_node)
    except CaseFailed as e:
        case.fail(str(e))
    except Exception:  # a bug in a client or in this script: the case fails, the others run
        case.fail("exception:\n" + traceback.format_exc())
    finally:
        for node in nodes:
            if node.proc is not None and node.proc.poll() is None:
                rc = node.stop()
                if rc != 0:
                    case.fail(f"keel node exited with {rc} on SIGTERM (expected 0):\n"
                              f"{tail(node.stderr_path)}")
    elapsed = time.monotonic() - started
    if case.errors:
        for node in nodes:
            if node.stderr_path:
                print(f"--- {name}: last node stderr ({node.stderr_path}):\n"
                      f"{tail(node.stderr_path)}", flush=True)
        print(f"FAILED {name} ({elapsed:.1f} s, {len(case.errors)} failure(s))", flush=True)
    else:
        print(f"PASS {name} ({elapsed:.1f} s)", flush=True)
    return not case.errors


# ---------------------------------------------------------------------------------------------
# Kafka helpers


def create_topic(case, bootstrap, topic, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions,
                                            replication_factor=1)], request_timeout=15)
    try:
        futures[topic].result(timeout=20)
    except KafkaException as e:
        case.fatal(f"CreateTopics {topic} with {partitions} partitions: {e}")
    md = admin.list_topics(topic=topic, timeout=10)
    got = len(md.topics[topic].partitions) if topic in md.topics else None
    if got != partitions:
        case.fatal(f"Metadata after CreateTopics gives {topic} {got} partitions, "
                   f"expected {partitions}")


def read_partitions(case, bootstrap, topic, partitions, deadline_s=30.0):
    """Everything in the partitions, from offset 0 up to their high watermark as it is now:
    {partition: [Message, ...]} in the order the consumer delivered them."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.time_ns()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        high = {}
        for p in partitions:
            low, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            case.eq(f"{topic}[{p}] low watermark", low, 0)
            high[p] = hi
        got = {p: [] for p in partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        deadline = deadline_after(deadline_s)
        done = lambda p: high[p] == 0 or (got[p] and got[p][-1].offset() >= high[p] - 1)
        while not all(done(p) for p in partitions):
            if time.monotonic() > deadline:
                case.fatal(f"reading {topic}: within {deadline_s} s got " +
                           ", ".join(f"[{p}] {len(got[p])}/{high[p]}" for p in partitions))
            for m in consumer.consume(num_messages=500, timeout=0.5):
                if m.error():
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        case.fail(f"consumer error reading {topic}: {m.error()}")
                    continue
                got[m.partition()].append(m)
        return got, high
    finally:
        consumer.close()


def check_dense(case, topic, got, high):
    """Offsets 0..high-1, each once, in order."""
    for p, msgs in sorted(got.items()):
        offsets = [m.offset() for m in msgs]
        if offsets != list(range(high[p])):
            missing = sorted(set(range(high[p])) - set(offsets))
            case.fail(f"{topic}[{p}]: consumed offsets are not 0..{high[p] - 1} in order "
                      f"(consumed {len(offsets)}, missing {shorten(missing[:20])}, first ones "
                      f"{offsets[:10]})")


# ---------------------------------------------------------------------------------------------
# 1. kcat


def run_kcat(case, args, input_bytes=None, timeout=30):
    try:
        res = subprocess.run(["kcat"] + args, input=input_bytes, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:
        case.fatal(f"kcat {' '.join(args)} did not finish within {timeout} s")
    if res.returncode != 0:
        case.fail(f"kcat {' '.join(args)} exited with {res.returncode}: "
                  f"{res.stderr.decode('utf-8', 'replace')}")
    return res.stdout.decode("utf-8")


def case_kcat(case, root, new_node):
    node = new_node()
    node.start()
    bs = node.bootstrap
    codecs = ["none", "gzip", "snappy", "lz4", "zstd"]
    for codec in codecs:
        topic = f"kcat-{codec}"
        records = []
        for i in range(40):
            # Values long and repetitive enough for every codec to actually compress them.
            value = f"{codec}-value-{i:03d}-" + ("abc" * (i * 7 % 150))
            records.append((f"key-{i % 4}", value))
        stdin = "".join(f"{k}:{v}\n" for k, v in records).encode()
        run_kcat(case, ["-b", bs, "-P", "-t", topic, "-p", "0", "-K:", "-z", codec,
                        "-H", "a=b", "-H", f"codec={codec}"], stdin)
        out = run_kcat(case, ["-b", bs, "-C", "-t", topic, "-o", "beginning", "-e", "-q",
                              "-f", "%p|%o|%k|%s|%h\\n"])
        got = [line.split("|") for line in out.splitlines()]
        want = [["0", str(i), k, v, f"a=b,codec={codec}"] for i, (k, v) in enumerate(records)]
        if got != want:
            diff = next((i for i, (g, w) in enumerate(zip(got, want)) if g != w),
                        min(len(got), len(want)))
            case.fail(f"-z {codec}: kcat -C read {len(got)} records, expected {len(want)}; "
                      f"first difference at #{diff}: got "
                      f"{shorten(got[diff] if diff < len(got) else None)}, expected "
                      f"{shorten(want[diff] if diff < len(want) else None)}")
        # The same records as events of stream T-0.
        events = node.read_stream(case, f"{topic}-0")
        case.eq(f"-z {codec}: events in stream {topic}-0",
                [(e["version"], e["type"], e["data"], e["metadata"]["kafka"].get("key"),
                  e["metadata"]["kafka"].get("headers")) for e in events],
                [(i, "kafka", v, k, [{"key": "a", "value": "b"},
                                     {"key": "codec", "value": codec}])
                 for i, (k, v) in enumerate(records)])

    listing = json.loads(run_kcat(case, ["-b", bs, "-L", "-J"]))
    case.eq("kcat -L brokers", listing.get("brokers"), [{"id": 0, "name": bs}])
    topics = {t["topic"]: t for t in listing.get("topics", [])}
    for codec in codecs:
        t = topics.get(f"kcat-{codec}")
        if not case.check(t is not None, f"kcat -L does not list topic kcat-{codec}: "
                          f"{sorted(topics)}"):
            continue
        case.check("error" not in t, f"kcat -L: topic kcat-{codec} has an error: {t}")
        case.eq(f"kcat -L: kcat-{codec} partitions (auto-created)",
                sorted((p["partition"], p["leader"]) for p in t["partitions"]),
                [(p, 0) for p in range(DEFAULT_PARTITIONS)])
    one = json.loads(run_kcat(case, ["-b", bs, "-L", "-J", "-t", "kcat-zstd"]))
    case.eq("kcat -L -t kcat-zstd topics", [t["topic"] for t in one.get("topics", [])],
            ["kcat-zstd"])


# ---------------------------------------------------------------------------------------------
# 2. librdkafka producer, acks=all


def case_producer(case, root, new_node):
    node = new_node()
    node.start()
    bs = node.bootstrap
    topic = "py-acks-all"
    partitions = 4
    create_topic(case, bs, topic, partitions)
    keys, per_key = 16, 60
    reports = []
    lock = threading.Lock()

    def delivered(err, msg):
        with lock:
            reports.append((err, msg.partition(), msg.offset(), msg.key(), msg.value()))

    producer = Producer({"bootstrap.servers": bs, "acks": "all", "linger.ms": 5,
                         "compression.type": "lz4", "message.timeout.ms": 30000})
    sent = []
    for seq in range(per_key):
        for k in range(keys):
            key = f"key-{k:02d}".encode()
            value = f"key-{k:02d}:{seq:03d}".encode()
            sent.append((key, value))
            while True:
                try:
                    producer.produce(topic, value=value, key=key,
                                     headers=[("seq", str(seq).encode())], on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
    left = producer.flush(60)
    case.eq("messages left after flush", left, 0)
    case.eq("delivery reports", len(reports), len(sent))
    errors = [r for r in reports if r[0] is not None]
    case.check(not errors, f"{len(errors)} delivery reports failed, e.g. {shorten(errors[:3])}")
    at = {}  # (partition, offset) -> (key, value)
    partition_of_key = {}
    for err, p, o, key, value in reports:
        if err is not None:
            continue
        case.check((p, o) not in at, f"two delivery reports name {topic}[{p}]@{o}")
        at[(p, o)] = (key, value)
        case.check(partition_of_key.setdefault(key, p) == p,
                   f"key {key!r} went to partitions {partition_of_key[key]} and {p}")
    used = sorted({p for p, _ in at})
    case.check(len(used) > 1, f"{keys} keys all went to partitions {used}")

    got, high = read_partitions(case, bs, topic, range(partitions))
    check_dense(case, topic, got, high)
    for p in range(partitions):
        case.eq(f"{topic}[{p}] high watermark", high[p], sum(1 for q, _ in at if q == p))
    last_seq = {}
    for p, msgs in got.items():
        for m in msgs:
            want = at.get((p, m.offset()))
            if not case.eq(f"{topic}[{p}]@{m.offset()} key and value", (m.key(), m.value()),
                           want):
                continue
            seq = int(m.value().split(b":")[1])
            case.eq(f"{topic}[{p}]@{m.offset()} headers", m.headers(),
                    [("seq", str(seq).encode())])
            case.check(seq == last_seq.get(m.key(), -1) + 1,
                       f"key {m.key()!r}: value #{seq} read after #{last_seq.get(m.key())}")
            last_seq[m.key()] = seq
    case.eq("values read per key", sorted(last_seq.values()), [per_key - 1] * keys)


# ---------------------------------------------------------------------------------------------
# 3. HTTP <-> Kafka


class Sse:
    """GET /v1/streams/S/subscribe, frame by frame."""

    def __init__(self, node, stream, timeout_s=10.0):
        self.conn = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=timeout_s)
        self.conn.putrequest("GET", f"/v1/streams/{stream}/subscribe", skip_accept_encoding=True)
        self.conn.putheader("Accept", "text/event-stream")
        self.conn.endheaders()
        self.resp = self.conn.getresponse()

    def frame(self):
        """{field: [values]} of the next frame; None at the end of the stream."""
        fields = {}
        while True:
            line = self.resp.readline()
            if not line:
                return None
            line = line.decode("utf-8").rstrip("\r\n")
            if line == "":
                if fields:
                    return fields
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)

    def close(self):
        self.conn.close()


def case_bridge(case, root, new_node):
    node = new_node()
    node.start()
    bs = node.bootstrap
    create_topic(case, bs, "bridge", 1)

    # HTTP -> Kafka
    posted = [("OrderPlaced", {"total": 5}),
              ("OrderShipped", {"carrier": "ups", "items": [1, 2, 3], "note": "caf\u00e9"}),
              ("OrderClosed", {"closed": True, "refund": None})]
    status, body = node.http("POST", "/v1/streams/bridge-0",
                             {"type": posted[0][0], "data": posted[0][1]})
    case.check(status == 200 and body.get("first_version") == 0,
               f"POST one event answered {status} {shorten(body)}")
    status, body = node.http("POST", "/v1/streams/bridge-0",
                             {"events": [{"type": t, "data": d} for t, d in posted[1:]]})
    case.check(status == 200 and body.get("first_version") == 1,
               f"POST a batch answered {status} {shorten(body)}")
    events = node.read_stream(case, "bridge-0")
    case.eq("types and data of the events over HTTP", [(e["type"], e["data"]) for e in events],
            posted)

    got, high = read_partitions(case, bs, "bridge", [0])
    check_dense(case, "bridge", got, high)
    case.eq("bridge[0] high watermark after 3 HTTP appends", high[0], 3)
    for m, e in zip(got[0], events):
        where = f"bridge[0]@{m.offset()} (appended over HTTP)"
        case.eq(f"{where} key", m.key(), None)
        try:
            case.eq(f"{where} value as JSON", json.loads(m.value()), e["data"])
        except (ValueError, TypeError):
            case.fail(f"{where} value is not JSON: {m.value()!r}")
        headers = m.headers() or []
        case.eq(f"{where} headers", sorted(headers),
                sorted([("keel.type", e["type"].encode()), ("keel.id", e["id"].encode())]))

    # Kafka -> HTTP, with an SSE subscription open from before the records exist.
    sse = Sse(node, "bridge-0")
    case.eq("subscribe status", sse.resp.status, 200)
    produced = [
        # key, value, headers: what the HTTP side must show (type, data_format, data, kafka)
        (b"k-bridge", b'{"from":"kafka","n":1}', [("h1", b"v1"), ("h1", b"v2")],
         ("kafka", "json", {"from": "kafka", "n": 1},
          {"key": "k-bridge", "headers": [{"key": "h1", "value": "v1"},
                                          {"key": "h1", "value": "v2"}]})),
        (b"k-typed", b"plain text", [("keel.type", b"FromKafka"), ("x", b"y")],
         ("FromKafka", "text", "plain text",
          {"key": "k-typed", "headers": [{"key": "keel.type", "value": "FromKafka"},
                                         {"key": "x", "value": "y"}]})),
        (b"\xff\x00k", b"\x00\xffbin", [("bin", b"\xfe")],
         ("kafka", "base64", "AP9iaW4=",
          {"key_base64": "/wBr", "headers": [{"key": "bin", "value_base64": "/g=="}]})),
        (b"tombstone", None, [],
         ("kafka", None, None, {"key": "tombstone", "value": None})),
    ]
    reports = []
    producer = Producer({"bootstrap.servers": bs, "acks": "all"})
    for key, value, headers, _ in produced:
        producer.produce("bridge", key=key, value=value, headers=headers, partition=0,
                         on_delivery=lambda err, msg: reports.append((err, msg.offset())))
    case.eq("messages left after flush", producer.flush(30), 0)
    case.eq("delivery reports (error, offset)", reports, [(None, 3 + i) for i in range(4)])

    events = node.read_stream(case, "bridge-0")
    case.eq("events in bridge-0 over HTTP", len(events), 3 + len(produced))
    for i, (key, value, headers, (typ, fmt, data, kafka)) in enumerate(produced):
        if 3 + i >= len(events):
            break
        e = events[3 + i]
        where = f"bridge-0 v{3 + i} (produced with Kafka)"
        case.eq(f"{where} version", e["version"], 3 + i)
        case.eq(f"{where} type", e["type"], typ)
        if fmt is not None:
            case.eq(f"{where} data_format and data", (e["data_format"], e["data"]), (fmt, data))
        meta = dict((e.get("metadata") or {}).get("kafka") or {})
        case.check(isinstance(meta.pop("timestamp", None), int),
                   f"{where} metadata.kafka.timestamp missing: {shorten(e.get('metadata'))}")
        if not headers and meta.get("headers") == []:
            del meta["headers"]  # no headers: [] or absent, either will do
        case.eq(f"{where} metadata.kafka (timestamp aside)", meta, kafka)

    # Kafka reads its own records back exactly.
    got, high = read_partitions(case, bs, "bridge", [0])
    check_dense(case, "bridge", got, high)
    for m, (key, value, headers, _) in zip(got[0][3:], produced):
        case.eq(f"bridge[0]@{m.offset()} read back (key, value, headers)",
                (m.key(), m.value(), m.headers() or []), (key, value, headers))

    # SSE: frames up to the first Kafka-produced record.
    seen = []
    deadline = deadline_after(15)
    try:
        while time.monotonic() < deadline:
            frame = sse.frame()
            if frame is None:
                case.fail(f"the subscription ended after {len(seen)} events")
                break
            if "data" not in frame:
                continue
            ev = json.loads("\n".join(frame["data"]))
            seen.append(ev)
            if ev.get("version") == 3:
                case.eq("SSE event v3 data", ev.get("data"), {"from": "kafka", "n": 1})
                case.eq("SSE event v3 metadata.kafka.key",
                        (ev.get("metadata") or {}).get("kafka", {}).get("key"), "k-bridge")
                case.eq("SSE event v3 metadata.kafka.headers",
                        (ev.get("metadata") or {}).get("kafka", {}).get("headers"),
                        produced[0][3][3]["headers"])
                break
        else:
            case.fail(f"no SSE event v3 within 15 s; saw {shorten(seen)}")
    except OSError as e:  # socket.timeout included
        case.fail(f"SSE read failed after {len(seen)} events: {e!r}")
    finally:
        sse.close()
    case.eq("SSE versions before the Kafka record", [ev.get("version") for ev in seen],
            list(range(len(seen))))


# ---------------------------------------------------------------------------------------------
# 4. Consumer group of 3 processes


def member_main(bootstrap, group, topic, outfile, delay_s):
    """A group member: writes `partition offset value` per message, commits after each batch,
    leaves the group cleanly on SIGTERM."""
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    name = os.path.basename(outfile)

    def on_assign(consumer, parts):
        print(f"{name}: assigned {[p.partition for p in parts]}", file=sys.stderr, flush=True)

    def on_revoke(consumer, parts):
        print(f"{name}: revoked {[p.partition for p in parts]}", file=sys.stderr, flush=True)

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
                         "max.poll.interval.ms": 20000})
    consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    with open(outfile, "a", encoding="utf-8") as out:
        while not stopping:
            msgs = consumer.consume(num_messages=20, timeout=0.2)
            next_offsets = {}
            for m in msgs:
                if m.error():
                    print(f"{name}: {m.error()}", file=sys.stderr, flush=True)
                    continue
                out.write(f"{m.partition()} {m.offset()} {m.value().decode()}\n")
                out.flush()
                next_offsets[m.partition()] = m.offset() + 1
                time.sleep(delay_s)
            if next_offsets:
                try:
                    consumer.commit(offsets=[TopicPartition(topic, p, o)
                                             for p, o in sorted(next_offsets.items())],
                                    asynchronous=False)
                except KafkaException as e:  # revoked meanwhile: the next owner reads them again
                    print(f"{name}: commit {next_offsets}: {e}", file=sys.stderr, flush=True)
    consumer.close()
    print(f"{name}: closed", file=sys.stderr, flush=True)
    return 0


def read_member_file(path):
    lines = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.endswith("\n"):
                    p, o, v = line.rstrip("\n").split(" ", 2)
                    lines.append((int(p), int(o), v))
    except FileNotFoundError:
        pass
    return lines


def committed_offsets(case, bootstrap, group, topic, partitions):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    try:
        parts = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=15)
    except KafkaException as e:
        case.fatal(f"OffsetFetch for group {group}: {e}")
    finally:
        consumer.close()
    for tp in parts:
        if tp.error:
            case.fail(f"OffsetFetch {topic}[{tp.partition}]: {tp.error}")
    return {tp.partition: tp.offset for tp in parts}


def case_group(case, root, new_node):
    node = new_node()
    node.start()
    bs = node.bootstrap
    topic, group, partitions, total = "grp", "grp-members", 6, 3000
    create_topic(case, bs, topic, partitions)

    produced = {}
    errors = []

    def delivered(err, msg):
        if err is not None:
            errors.append(err)
        else:
            produced[(msg.partition(), msg.offset())] = msg.value().decode()

    producer = Producer({"bootstrap.servers": bs, "acks": "all", "linger.ms": 5})
    for i in range(total):
        producer.produce(topic, value=f"m-{i:05d}".encode(), partition=i % partitions,
                         on_delivery=delivered)
        producer.poll(0)
    case.eq("messages left after flush", producer.flush(60), 0)
    del producer
    case.check(not errors, f"{len(errors)} delivery reports failed: {shorten(errors[:3])}")
    if len(produced) != total:
        case.fatal(f"{len(produced)} of {total} messages delivered")
    end = {p: sum(1 for q, _ in produced if q == p) for p in range(partitions)}

    outs = [os.path.join(root, f"member{i}.out") for i in range(3)]
    members = []
    for i, out in enumerate(outs):
        err = open(os.path.join(root, f"member{i}.stderr"), "wb")
        members.append(spawn([sys.executable, os.path.abspath(__file__), "--member", bs, group,
                              topic, out, "0.004"],
                             stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT))
        err.close()

    def member_logs():
        return "\n".join(f"--- member{i} stderr:\n"
                         f"{tail(os.path.join(root, f'member{i}.stderr'), 15)}"
                         for i in range(3))

    try:
        deadline = deadline_after(40)
        while not all(read_member_file(out) for out in outs):
            for i, m in enumerate(members):
                if m.poll() is not None:
                    case.fatal(f"member{i} exited with {m.returncode}\n{member_logs()}")
            if time.monotonic() > deadline:
                case.fatal("the 3 members did not all consume something within 40 s: consumed "
                           f"{[len(read_member_file(o)) for o in outs]}\n{member_logs()}")
            time.sleep(0.05)
        union = {(p, o) for out in outs for p, o, _ in read_member_file(out)}
        log(f"all 3 members consuming ({len(union)}/{total} consumed): SIGKILL member0, "
            "SIGTERM member1")
        case.check(len(union) < total * 0.8,
                   f"{len(union)} of {total} consumed before a member stopped: too fast for the "
                   "case to mean anything (raise the member delay)")
        members[0].kill()
        members[0].wait()
        time.sleep(0.3)
        members[1].send_signal(signal.SIGTERM)
        try:
            case.eq("member1 exit status after SIGTERM (consumer.close())",
                    members[1].wait(timeout=30), 0)
        except subprocess.TimeoutExpired:
            case.fail(f"member1 did not leave within 30 s of SIGTERM\n{member_logs()}")

        deadline = deadline_after(60)
        while True:
            union = {(p, o) for out in outs for p, o, _ in read_member_file(out)}
            if len(union & produced.keys()) == total:
                break
            if members[2].poll() is not None:
                case.fatal(f"member2 exited with {members[2].returncode}\n{member_logs()}")
            if time.monotonic() > deadline:
                missing = sorted(produced.keys() - union)
                per = {p: sum(1 for q, _ in missing if q == p) for p in range(partitions)}
                case.fatal(f"after 60 s, {len(missing)} produced messages were never consumed "
                           f"(per partition {per}, e.g. {missing[:10]})\n{member_logs()}")
            time.sleep(0.1)
        log(f"every message consumed; member2 has consumed from partitions "
            f"{sorted({p for p, _, _ in read_member_file(outs[2])})}")
        lines = [line for out in outs for line in read_member_file(out)]
        wrong = [line for line in lines if produced.get((line[0], line[1])) != line[2]]
        case.check(not wrong, f"{len(wrong)} consumed lines do not match what was produced at "
                   f"their offset, e.g. {shorten(wrong[:5])}")
        case.check(union <= produced.keys(),
                   f"consumed offsets never produced: {sorted(union - produced.keys())[:10]}")
        log(f"{len(lines)} messages consumed for {total} produced "
            f"({len(lines) - total} redelivered)")

        # Everything is committed (member2 commits after each batch it wrote).
        deadline = deadline_after(20)
        while True:
            committed = committed_offsets(case, bs, group, topic, range(partitions))
            if committed == end:
                break
            if time.monotonic() > deadline:
                case.fail(f"committed offsets {committed}, expected the end offsets {end}")
                break
            time.sleep(0.2)
        probe = Consumer({"bootstrap.servers": bs, "group.id": "probe"})
        try:
            high = {p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                    for p in range(partitions)}
        finally:
            probe.close()
        case.eq("high watermarks", high, end)

        members[2].send_signal(signal.SIGTERM)
        try:
            case.eq("member2 exit status after SIGTERM", members[2].wait(timeout=30), 0)
        except subprocess.TimeoutExpired:
            case.fail(f"member2 did not leave within 30 s of SIGTERM\n{member_logs()}")
    finally:
        for m in members:
            if m.poll() is None:
                m.kill()
                m.wait()

    before = committed_offsets(case, bs, group, topic, range(partitions))
    rc = node.stop()
    case.eq("keel node exit status on SIGTERM", rc, 0)
    node.start()
    after = committed_offsets(case, bs, group, topic, range(partitions))
    case.eq("committed offsets after the restart", after, before)
    case.eq("committed offsets after the restart vs end offsets", after, end)

    # A new member of the group starts from the committed offsets: nothing left to read.
    assigned = []
    consumer = Consumer({"bootstrap.servers": bs, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
    try:
        consumer.subscribe([topic], on_assign=lambda c, parts: assigned.extend(parts))
        deadline = deadline_after(20)
        quiet_until = None
        extra = []
        while quiet_until is None or time.monotonic() < quiet_until:
            for m in consumer.consume(num_messages=100, timeout=0.2):
                if not m.error():
                    extra.append((m.partition(), m.offset()))
            if quiet_until is None and len(assigned) == partitions:
                quiet_until = time.monotonic() + 2.0
            if quiet_until is None and time.monotonic() > deadline:
                case.fail(f"a new member was assigned {[p.partition for p in assigned]} "
                          f"within 20 s after the restart, expected all {partitions} partitions")
                break
        case.check(not extra, f"a new member after the restart read {len(extra)} messages "
                   f"already committed, e.g. {extra[:10]}")
    finally:
        consumer.close()


# ---------------------------------------------------------------------------------------------
# 5. SIGKILL during acks=all production


def crash_value(i):
    return b"crash-%08d-" % i + hashlib.sha256(b"%d" % i).digest()


def case_crash(case, root, new_node):
    node = new_node()
    node.start()
    bs = node.bootstrap
    topic, partitions = "crash", 3
    create_topic(case, bs, topic, partitions)

    lock = threading.Lock()
    acked = {}  # value -> (partition, offset)
    failed = []
    sent = [0]
    stop = threading.Event()

    def delivered(err, msg):
        with lock:
            if err is None:
                acked[msg.value()] = (msg.partition(), msg.offset())
            else:
                failed.append(err)

    producer = Producer({"bootstrap.servers": bs, "acks": "all", "enable.idempotence": False,
                         "linger.ms": 5, "message.timeout.ms": 5000,
                         "queue.buffering.max.messages": 20000, "retry.backoff.ms": 100,
                         "log_level": 2})  # the connection errors after SIGKILL are expected

    def produce_loop():
        # At most ~50000 records a second, so that reading them back stays quick.
        i = 0
        begin = time.monotonic()
        while not stop.is_set():
            if i % 500 == 0:
                ahead = i / 50000 - (time.monotonic() - begin)
                if ahead > 0:
                    time.sleep(ahead)
            try:
                producer.produce(topic, value=crash_value(i), partition=i % partitions,
                                 on_delivery=delivered)
                i += 1
                sent[0] = i
                producer.poll(0)
            except BufferError:
                producer.poll(0.01)

    t0 = time.monotonic()
    thread = threading.Thread(target=produce_loop, daemon=True)
    thread.start()
    try:
        time.sleep(1.0)
        deadline = deadline_after(20)
        while True:
            with lock:
                n = len(acked)
            if n >= 100:
                break
            if time.monotonic() > deadline:
                case.fatal(f"only {n} acknowledged records after 20 s of production "
                           f"({len(failed)} failed: {shorten(failed[:3])})")
            time.sleep(0.05)
        node.kill9()
        with lock:
            at_kill = len(acked)
        log(f"SIGKILL after {time.monotonic() - t0:.1f} s of production: {at_kill} records "
            f"acknowledged of {sent[0]} produced")
    finally:
        stop.set()
        thread.join(10)
    producer.flush(2)  # what was in flight fails or is never answered: not acknowledged
    producer.purge()
    producer.flush(0)
    with lock:
        snapshot = dict(acked)
    producer = None  # destroyed: nothing more is acknowledged

    node.start()
    got, high = read_partitions(case, bs, topic, range(partitions), deadline_s=60)
    check_dense(case, topic, got, high)
    at = {(p, m.offset()): m.value() for p, msgs in got.items() for m in msgs}
    present = set(at.values())
    missing = [v for v in snapshot if v not in present]
    case.check(not missing, f"{len(missing)} of {len(snapshot)} acknowledged records are not in "
               f"the topic after the restart, e.g. {shorten(missing[:3])}")
    misplaced = [(v, po, at.get(po)) for v, po in snapshot.items() if at.get(po) != v]
    case.check(not misplaced, f"{len(misplaced)} acknowledged records are not at the offset "
               f"their delivery report named, e.g. {shorten(misplaced[:3])}")
    log(f"after the restart: {sum(high.values())} records ({high}), "
        f"{len(snapshot)} acknowledged")


def case_idempotent(case, root, new_node):
    """An idempotent producer (enable.idempotence=true) keeps producing while the node is paused
    (SIGSTOP) past the producer's request timeout, then killed with SIGKILL and restarted on the
    same port: librdkafka sends again what it had no answer for, with the same producer id and
    sequences, and every record must be in the topic exactly once. The pause is what makes a
    retry of a batch the node did append: the producer gives up on the request and sends it on
    a new connection while the node still has the first copy to read when it resumes."""
    node = new_node()
    node.start()
    bs = node.bootstrap
    topic, partitions, total = "idem", 2, 20000
    create_topic(case, bs, topic, partitions)
    lock = threading.Lock()
    acked = {}
    failed = []

    def delivered(err, msg):
        with lock:
            if err is None:
                acked[msg.value()] = (msg.partition(), msg.offset())
            else:
                failed.append(err)

    producer = Producer({"bootstrap.servers": bs, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 5, "message.timeout.ms": 60000, "retry.backoff.ms": 100,
                         "request.timeout.ms": 500, "socket.timeout.ms": 500,
                         "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 200,
                         "log_level": 2})
    killed = False
    for i in range(total):
        while True:
            try:
                producer.produce(topic, value=b"idem-%06d" % i, partition=i % partitions,
                                 on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
        if i % 200 == 199:
            time.sleep(0.02)  # about 10 000 records a second: the kill lands mid-stream
        if i == total // 4:
            node.proc.send_signal(signal.SIGSTOP)
            time.sleep(1.5)  # past request.timeout.ms: librdkafka retries on a new connection
            node.proc.send_signal(signal.SIGCONT)
        if not killed and i == total // 2:
            node.kill9()
            killed = True
            time.sleep(0.3)
            node.start()
    remaining = producer.flush(60)
    case.check(remaining == 0, f"{remaining} records still unanswered 60 s after the restart")
    case.check(not failed, f"{len(failed)} delivery reports failed, e.g. {shorten(failed[:3])}")
    got, high = read_partitions(case, bs, topic, range(partitions), deadline_s=60)
    check_dense(case, topic, got, high)
    values = [m.value() for msgs in got.values() for m in msgs]
    duplicates = len(values) - len(set(values))
    case.check(duplicates == 0, f"{duplicates} records are in the topic twice (an idempotent "
               "producer's retry of a batch the node had appended was appended again)")
    case.check(len(set(values)) == total, f"{len(set(values))} distinct records of {total}")
    at = {(p, m.offset()): m.value() for p, msgs in got.items() for m in msgs}
    misplaced = [(v, po) for v, po in acked.items() if at.get(po) != v]
    case.check(not misplaced, f"{len(misplaced)} acknowledged records are not at the offset "
               f"their delivery report named, e.g. {shorten(misplaced[:3])}")
    log(f"{total} records, {len(acked)} acknowledged, {duplicates} duplicates after a pause and "
        "a SIGKILL mid-production")


# ---------------------------------------------------------------------------------------------


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "--member":
        if len(sys.argv) != 7:
            print("usage: --member BOOTSTRAP GROUP TOPIC OUTFILE DELAY_S", file=sys.stderr)
            return 2
        return member_main(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5],
                           float(sys.argv[6]))
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} KEEL_BINARY", file=sys.stderr)
        return 2
    keel = os.path.abspath(sys.argv[1])
    if shutil.which("kcat") is None:
        print("kcat is not on PATH", file=sys.stderr)
        return 1
    tmp = tempfile.mkdtemp(prefix="keel-kafka-clients-")
    started = time.monotonic()
    cases = [("kcat", case_kcat), ("producer", case_producer), ("bridge", case_bridge),
             ("group", case_group), ("crash", case_crash), ("idempotent", case_idempotent)]
    only = os.environ.get("KEEL_KAFKA_CASES", "").split()  # a few cases only, by name
    if only:
        cases = [c for c in cases if c[0] in only]
    passed = 0
    try:
        for name, fn in cases:
            passed += run_case(keel, tmp, name, fn)
    finally:
        for proc in CHILDREN:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if os.environ.get("KEEP_TMP"):
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{passed}/{len(cases)} cases passed in {time.monotonic() - started:.1f} s",
          flush=True)
    return 0 if passed == len(cases) else 1


if __name__ == "__main__":
    sys.exit(main())
