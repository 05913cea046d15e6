#!/usr/bin/env python3
"""The application: it calls its pricing service N times through the ambassador on localhost,
with no retry, timeout or balancing logic of its own, and counts what it got.

    python3 app.py [--requests 200] [--ambassador http://127.0.0.1:10000]
"""
import argparse
import collections
import json
import urllib.error
import urllib.request

parser = argparse.ArgumentParser()
parser.add_argument("--requests", type=int, default=200)
parser.add_argument("--ambassador", default="http://127.0.0.1:10000")
args = parser.parse_args()

answers = collections.Counter()
errors = collections.Counter()
for i in range(args.requests):
    try:
        with urllib.request.urlopen(f"{args.ambassador}/price?item={i}", timeout=5) as response:
            answers[json.load(response)["replica"]] += 1
    except urllib.error.HTTPError as error:
        errors[f"{error.code} {error.headers.get('x-keel-reason', '')}".strip()] += 1
    except OSError as error:
        errors[type(error).__name__] += 1

print(f"{args.requests} calls: {sum(answers.values())} answered, {sum(errors.values())} failed")
print("answered by replica:", dict(answers))
if errors:
    print("errors:", dict(errors))
