#!/usr/bin/env python3
"""A webhook receiver for tests: verifies every POST with the Standard Webhooks
reference library (standardwebhooks, from PyPI; not Assent's code) and appends
one JSON line per request to --out: {"id", "verified", "error", "body"}.
Answers 204 when the signature checks out, 400 when it does not, or
--status when given (to play a failing receiver). Prints READY when listening."""
import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--secret", required=True)
parser.add_argument("--out", required=True)
parser.add_argument("--status", type=int, default=None)
args = parser.parse_args()
verifier = Webhook(args.secret)
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        raw = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        entry = {"id": headers.get("webhook-id"), "verified": False, "error": None, "body": None}
        try:
            entry["body"] = verifier.verify(raw, headers)
            entry["verified"] = True
        except WebhookVerificationError as error:
            entry["error"] = str(error)
        except Exception as error:  # malformed body and the like
            entry["error"] = repr(error)
        with lock:
            with open(args.out, "a", encoding="utf-8") as out:
                out.write(json.dumps(entry, sort_keys=True) + "\n")
        status = args.status or (204 if entry["verified"] else 400)
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_):
        pass


server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
print("READY", flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    pass
