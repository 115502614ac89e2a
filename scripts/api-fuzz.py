#!/usr/bin/env python3
"""Fuzzes Assent's HTTP API with schemathesis, from its own OpenAPI document.

    scripts/api-fuzz.py .build/debug/assent [--postgres URL] [--max-examples N] [--seed N]

Starts `assent serve` on a fresh database (a new SQLite file, or a new database
made on the PostgreSQL server at URL), adds a topic, a contact with a history,
a form, a segment and a webhook so that operations on existing things are
reached too, then runs `schemathesis run` against /api/v1/openapi.json with an
admin key: every phase (examples, coverage, fuzzing, stateful), positive and
negative data. It fails on any 5xx answer and on any answer that its documented
schema does not describe (status code, content type, body). The scripts/test
command runs it on both stores; the figures it prints go in the README's
"Guarantees".
"""
import argparse
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, key, method, path, body=None):
    request = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        sys.exit(f"api-fuzz: setting up, {method} {path} answered {error.code}: {error.read()[:500]!r}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("assent", help="the assent binary")
    parser.add_argument("--postgres", help="a PostgreSQL server URL: fuzz a new database on it instead of SQLite")
    parser.add_argument("--max-examples", type=int, default=25, help="test cases per operation and phase (default 25)")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("ASSENT_FUZZ_SEED", "0")) or int(time.time()) % 100000,
                        help="schemathesis' seed (default: ASSENT_FUZZ_SEED, else from the clock; printed to repeat a run)")
    args = parser.parse_args()
    try:
        import schemathesis  # noqa: F401 (run below as a module of this interpreter)
    except ImportError:
        sys.exit("api-fuzz: schemathesis is not installed (python3 -m pip install schemathesis)")

    work = tempfile.mkdtemp(prefix="assent-fuzz-")
    # The fuzzer sends thousands of requests without a key or with a wrong one on purpose: the limit on those
    # (tested on its own in AbuseLimitTests) would otherwise answer most of the run with 429.
    env = dict(os.environ, ASSENT_MASTER_KEY=base64.b64encode(os.urandom(32)).decode(), ASSENT_LOG_LEVEL="warning",
               ASSENT_MAIL_DIR=os.path.join(work, "mail"), ASSENT_FAILED_AUTH_PER_MINUTE="100000")
    env.pop("ASSENT_DATABASE_URL", None)
    database = None
    if args.postgres:
        database = f"assent_fuzz_{os.getpid()}"
        subprocess.run(["psql", args.postgres, "-qc", f"CREATE DATABASE {database}"], check=True)
        env["ASSENT_DATABASE_URL"] = re.sub(r"/[^/?]*(\?|$)", f"/{database}\\1", args.postgres.split("://", 1)[1], count=1)
        env["ASSENT_DATABASE_URL"] = args.postgres.split("://", 1)[0] + "://" + env["ASSENT_DATABASE_URL"]
        store = "PostgreSQL"
    else:
        env["ASSENT_DATABASE"] = os.path.join(work, "assent.sqlite")
        store = "SQLite"
    server = None
    try:
        subprocess.run([args.assent, "topics", "add", "news", "--title", "News", "--notice", "We send news."], env=env, check=True,
                       capture_output=True)
        subprocess.run([args.assent, "topics", "add", "events", "--title", "Events", "--notice", "We send events.", "--no-double-opt-in"],
                       env=env, check=True, capture_output=True)
        made = subprocess.run([args.assent, "keys", "create", "--name", "fuzz", "--scope", "admin"], env=env, check=True,
                              capture_output=True, text=True).stdout
        key = next(line for line in made.splitlines() if line.startswith("assent_"))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([args.assent, "serve"], env=dict(env, ASSENT_PORT=str(port)),
                                  stdout=open(os.path.join(work, "serve.out"), "w"), stderr=open(os.path.join(work, "serve.err"), "w"))
        for _ in range(600):
            try:
                # /readyz: while the database is migrated a stand-in answers /healthz already.
                urllib.request.urlopen(base + "/readyz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            sys.exit("api-fuzz: assent serve did not answer /readyz with 200")

        # Things for the operations on existing resources to find.
        contact = call(base, key, "POST", "/api/v1/contacts", {"email": "fuzz@example.com", "name": "Fuzz"})["id"]
        changed = call(base, key, "PUT", f"/api/v1/contacts/{contact}/preferences",
                       {"source": "api", "preferences": [{"topic": "events", "granted": True}]})
        event = next((e["id"] for e in changed.get("events", [])), contact)
        form = call(base, key, "POST", "/api/v1/forms", {"id": "fuzz-form", "title": "Fuzz form", "topics": ["news", "events"]})["id"]
        segment = call(base, key, "POST", "/api/v1/segments", {"id": "fuzz-segment", "name": "Fuzz segment", "topics": ["events"]})["id"]
        webhook = call(base, key, "POST", "/api/v1/webhooks",
                       {"url": "http://127.0.0.1:9/hook", "events": ["consent.changed"], "allowPrivateNetwork": True})["id"]
        config = os.path.join(work, "schemathesis.toml")
        with open(config, "w") as f:
            for pattern, (name, value) in [("^/api/v1/contacts/", ("id", contact)), ("^/api/v1/forms/", ("id", form)),
                                           ("^/api/v1/segments/", ("id", segment)), ("^/api/v1/webhooks/", ("id", webhook)),
                                           ("^/api/v1/receipts/", ("id", event)), ("^/api/v1/topics/", ("key", "news"))]:
                f.write(f'[[operations]]\ninclude-path-regex = "{pattern}"\nparameters = {{ {name} = "{value}" }}\n\n')

        print(f"api-fuzz: {store}, seed {args.seed}, {args.max_examples} examples per operation and phase", flush=True)
        report = os.path.join(work, "report")
        # One worker: with two threads, hypothesis describing its filter lambdas (ast.parse) races in
        # CPython 3.11 ("SystemError: AST constructor recursion depth mismatch"), which schemathesis
        # reports as a runtime error of the run although every generated request passed (seen 2026-12-04).
        run = subprocess.run([sys.executable, "-m", "schemathesis.cli", "--config-file", config, "run", f"{base}/api/v1/openapi.json",
                              "-H", f"Authorization: Bearer {key}", "--checks", CHECKS, "--max-examples", str(args.max_examples),
                              "--seed", str(args.seed), "--workers", "1", "--no-color", "--report", "junit", "--report-dir", report],
                             capture_output=True, text=True, cwd=work)  # its cache goes in the work folder, not the repository
        output = run.stdout + run.stderr
        summary = re.search(r"Test cases:\s*\n\s*(.+)", output)
        print(f"api-fuzz: {store}: {summary.group(1).strip() if summary else 'no summary'}")
        if run.returncode != 0:
            print(output[-20000:])
            print(f"api-fuzz: {store}: FAILED (seed {args.seed}); the server's log: {work}/serve.err")
            sys.exit(1)
        if server.poll() is not None:
            sys.exit(f"api-fuzz: {store}: assent serve exited during the run; see {work}/serve.err")
    finally:
        if server:
            server.terminate()
            server.wait(timeout=30)
        if database:
            subprocess.run(["psql", args.postgres, "-qc", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"])
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
