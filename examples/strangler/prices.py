#!/usr/bin/env python3
"""The pricing service, in two versions. `legacy` is the old one; `modern` is its replacement,
with one deliberate difference: it rounds half-cent prices down instead of up. Both stamp each
answer with the time it was made (noise a diff must not count). Stdlib only.

    python3 prices.py legacy PORT
    python3 prices.py modern PORT [--fail]
"""
import argparse
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

parser = argparse.ArgumentParser()
parser.add_argument("version", choices=["legacy", "modern"])
parser.add_argument("port", type=int)
parser.add_argument("--fail", action="store_true", help="answer every request with a 503")
args = parser.parse_args()

CENTS = {"tea": 310.5, "coffee": 420, "cake": 299.5}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        query = parse_qs(urlparse(self.path).query)
        item = query.get("item", ["tea"])[0]
        if args.fail:
            status, body = 503, {"error": "unavailable"}
        elif item not in CENTS:
            status, body = 404, {"error": f"no such item: {item}"}
        else:
            cents = CENTS[item]
            rounded = int(cents + 0.5) if args.version == "legacy" else int(cents)
            status, body = 200, {"item": item, "price_cents": rounded,
                                 "generated_at": time.time_ns(), "version": args.version}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *_):
        pass


ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()
