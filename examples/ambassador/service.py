#!/usr/bin/env python3
"""A stand-in for a remote service: answers GET /price?item=X with JSON. With --fail-rate it
fails that share of requests with a 503, with --delay-ms it answers slowly. Stdlib only.

    python3 service.py PORT [--fail-rate 0.3] [--delay-ms 0]
"""
import argparse
import json
import random
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("port", type=int)
parser.add_argument("--fail-rate", type=float, default=0.0)
parser.add_argument("--delay-ms", type=int, default=0)
args = parser.parse_args()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path.startswith("/healthz"):
            status, body = 200, {"ok": True}
        elif random.random() < args.fail_rate:
            status, body = 503, {"error": "overloaded"}
        else:
            time.sleep(args.delay_ms / 1000)
            status, body = 200, {"replica": args.port, "price_cents": 1299}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the caller gave up (a timeout): nothing to do

    def log_message(self, *_):
        pass


class Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # The proxy closes a connection it gave up on (a per-try timeout) at once, which can
        # reset it while this side waits for the next request: not an error here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


Server(("127.0.0.1", args.port), Handler).serve_forever()
