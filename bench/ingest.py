"""Ingest throughput: the relay under gunicorn against a bare Flask app under the same
gunicorn settings, all loaded by wrk from another process on 127.0.0.1. Beside them, on
each database, the reference the targets are set by: bare Flask plus one INSERT and
commit per request (bench/plain_insert.py); and the chosen stack's floor: the same
INSERT through SQLAlchemy Core.

The event is a 1.5 KB Stripe `checkout.session.completed`, signed the way Stripe signs
(`Stripe-Signature: t=...,v1=HMAC-SHA256(secret, "t.body")`), posted to a route whose
mapping verifies it, maps it (tag, list, remember the customer) and stores the event
with its delivery plan before answering. Every request carries a new event id (a
repeated id would be answered as a duplicate without storing anything), so wrk cycles
through a file of requests signed beforehand, more than a run can send.

All seven servers (bare; the one-INSERT app, the floor and the relay on each
database) stay up while rounds load each in turn as fast as 32 connections go, from wrk
(accepted events/s, p50/p99). Then bare and each relay at half its own rate from an open-loop
generator (`bench/openloop.py`: a constant rate over 32 connections, each request timed
from when it was due), for p99 at a rate the server keeps up with; bare's is what the
machine and gunicorn give an app that does nothing at that share of its capacity.

    .venv/bin/python -m bench.ingest [--seconds 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from bench import openloop, runtime
from bench import plain_insert as plain_insert_app
from bench.memory import peak_rss_mb, pss_mb
from bench.stack import ROOT, Stack, free_port, wait_http
from tests.postgres import Cluster

SECRET = "whsec_bench_0123456789abcdef"
CONNECTIONS = 32
MAPPING = (ROOT / "mappings" / "examples" / "stripe.yaml").read_text()

JSON_TYPE = "application/json; charset=utf-8"
LUA = """
local requests, n = {}, 0
function init(args)
  for line in io.lines(args[1]) do
    local signature, body = line:match("^([^\\t]*)\\t(.*)$")
    requests[#requests + 1] = wrk.format("POST", nil, {
      ["Content-Type"] = "JSON_TYPE",
      ["Stripe-Signature"] = signature,
    }, body)
  end
end
function request()
  n = n + 1
  return requests[(n - 1) % #requests + 1]
end
""".replace("JSON_TYPE", JSON_TYPE)


def event_body(tag: str, n: int) -> bytes:
    """A Stripe checkout.session.completed of about 1.5 KB, unique by `tag` and `n`."""
    event = {
        "id": f"evt_{tag}{n:08d}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": 1767225598,
        "data": {
            "object": {
                "id": f"cs_test_{tag}{n:08d}a1B2c3D4e5F6g7H8i9J0kLmNoPqRsTuVwXyZ",
                "object": "checkout.session",
                "amount_subtotal": 4900,
                "amount_total": 4900,
                "automatic_tax": {"enabled": False, "liability": None, "status": None},
                "billing_address_collection": "auto",
                "cancel_url": "https://shop.example.com/cancel",
                "client_reference_id": "kartra-lead-optin-77",
                "created": 1767225478,
                "currency": "usd",
                "customer": f"cus_{tag}{n:08d}",
                "customer_creation": "if_required",
                "customer_details": {
                    "address": {
                        "city": "San Francisco",
                        "country": "US",
                        "line1": "123 Market St",
                        "line2": None,
                        "postal_code": "94105",
                        "state": "CA",
                    },
                    "email": f"buyer{n}.{tag}@example.com",
                    "name": "Jane Doe",
                    "phone": "+15555550123",
                    "tax_exempt": "none",
                    "tax_ids": [],
                },
                "expires_at": 1767311878,
                "livemode": False,
                "metadata": {"product_sku": "COURSE-101", "kartra_tag": "Bought Course 101"},
                "mode": "payment",
                "payment_intent": f"pi_3Q{tag}{n:08d}",
                "payment_link": "plink_1QFixtureCourse101",
                "payment_method_options": {"card": {"request_three_d_secure": "automatic"}},
                "payment_method_types": ["card"],
                "payment_status": "paid",
                "phone_number_collection": {"enabled": True},
                "status": "complete",
                "success_url": "https://shop.example.com/thanks",
                "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
                "ui_mode": "hosted",
            }
        },
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "checkout.session.completed",
    }
    return json.dumps(event, separators=(",", ":")).encode()


def stripe_signature(body: bytes, timestamp: int, secret: str = SECRET) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def signed_events(tag: str, count: int):
    """`count` (signature, body) pairs, signed now."""
    timestamp = int(time.time())
    for n in range(count):
        body = event_body(tag, n)
        yield stripe_signature(body, timestamp), body


def signed_headers(signature: str) -> dict[str, str]:
    return {"Content-Type": JSON_TYPE, "Stripe-Signature": signature}


def write_requests(path: Path, tag: str, count: int) -> Path:
    """`count` signed events, one `signature<TAB>body` line each, for wrk's script."""
    with path.open("wb") as out:
        for signature, body in signed_events(tag, count):
            out.write(signature.encode() + b"\t" + body + b"\n")
    return path


def ensure_wrk() -> str:
    """wrk from Debian, installed when missing (as .ci/run installs PostgreSQL)."""
    found = shutil.which("wrk")
    if found:
        return found
    subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=300)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk"],
        check=True,
        timeout=300,
        env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    return shutil.which("wrk") or "wrk"


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNITS[unit]


def wrk(url: str, requests_file: Path, seconds: float, work: Path) -> dict:
    script = work / "signed.lua"
    script.write_text(LUA)
    command = [
        ensure_wrk(),
        "-t1",
        f"-c{CONNECTIONS}",
        f"-d{int(seconds)}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
        url,
        "--",
        str(requests_file),
    ]
    out = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout
    sent = re.search(r"(\d+) requests in ([\d.]+\w+),", out)
    requests, elapsed = int(sent.group(1)), _ms(sent.group(2)) / 1000
    refused = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.MULTILINE))
    return {
        "requests": requests,
        "refused": int(refused.group(1)) if refused else 0,
        "socket_errors": sum(map(int, errors.groups())) if errors else 0,
        "rate": (requests - (int(refused.group(1)) if refused else 0)) / elapsed,
        "p50": _ms(percentiles["50"]),
        "p99": _ms(percentiles["99"]),
        "command": " ".join(command[:9] + ["URL", "--", "REQUESTS"]),
    }


ROUNDS = 3
HALF_SECONDS = 10


@dataclass
class Served:
    url: str
    pid: int


def measure(seconds: float = 4.0, rounds: int = ROUNDS) -> dict:
    """Every server up at once, then `rounds` rounds that load each in turn at full
    speed for `seconds`: a machine that slows down or speeds up during the part weighs
    on every server alike, not on whichever ran then. A ratio to bare is the median of
    the rounds' ratios; a server's figures are its median round's. Then bare and each
    relay at half its median rate."""
    work = Path(tempfile.mkdtemp(prefix="relay-ingest-"))
    cluster = Cluster().start()
    try:
        with contextlib.ExitStack() as up:
            servers = {
                "bare": up.enter_context(_gunicorn("bench.bare:app", "bare", work)),
                "insert-sqlite": up.enter_context(
                    _plain_insert(f"sqlite:///{work}/plain.db", "insert-sqlite", work)
                ),
                "insert-pg": up.enter_context(
                    _plain_insert(cluster.new_database(), "insert-pg", work)
                ),
                "floor-sqlite": up.enter_context(
                    _plain_insert(f"sqlite:///{work}/floor.db", "floor-sqlite", work, "sqlalchemy")
                ),
                "floor-pg": up.enter_context(
                    _plain_insert(cluster.new_database(), "floor-pg", work, "sqlalchemy")
                ),
                "sqlite": up.enter_context(_relay(f"sqlite:///{work}/ingest.db", "sqlite", work)),
                "pg": up.enter_context(_relay(cluster.new_database(), "pg", work)),
            }
            runs = _rounds(servers, seconds, rounds, work)
            figures = {tag: _figures(runs[tag], runs["bare"]) for tag in servers}
            for tag in ("bare", "sqlite", "pg"):
                figures[tag]["half"] = _half(servers[tag].url, tag, figures[tag]["full"], work)
            for tag, served in servers.items():
                figures[tag]["rss_mb"] = peak_rss_mb(served.pid)
                figures[tag]["pss_mb"] = pss_mb(served.pid)
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    return {
        "bare": figures["bare"],
        "plain_insert": {"sqlite": figures["insert-sqlite"], "postgresql": figures["insert-pg"]},
        "stack_floor": {"sqlite": figures["floor-sqlite"], "postgresql": figures["floor-pg"]},
        "sqlite": figures["sqlite"],
        "postgresql": figures["pg"],
        "rounds": rounds,
    }


def _rounds(servers: dict[str, Served], seconds: float, rounds: int, work: Path) -> dict:
    """Each server's full-speed runs, after a 2 s warm-up; the requests are signed
    beforehand, so that signing does not run between one server's run and the next.
    One file for the warm-ups and one a round serve every server: each stores into a
    database of its own, where every event id of a file is new once."""
    capacity = int(seconds * 9000)
    warm = write_requests(work / "warm.txt", "w", 20000)
    for served in servers.values():
        wrk(served.url, warm, 2, work)
    files = [write_requests(work / f"round-{n}.txt", f"f{n}", capacity) for n in range(rounds)]
    runs: dict[str, list[dict]] = {tag: [] for tag in servers}
    for n in range(rounds):
        for tag, served in servers.items():
            run = wrk(served.url, files[n], seconds, work)
            if run["requests"] > capacity:
                raise SystemExit(f"{tag}: wrk sent more requests than it had signed ({capacity})")
            runs[tag].append(run)
    return runs


def _figures(runs: list[dict], bare_runs: list[dict]) -> dict:
    rates = [run["rate"] for run in runs]
    return {
        "full": sorted(runs, key=lambda run: run["rate"])[len(runs) // 2],
        "rates": rates,
        "ratio": statistics.median(
            rate / bare["rate"] for rate, bare in zip(rates, bare_runs, strict=True)
        ),
    }


def _half(url: str, tag: str, full: dict, work: Path) -> dict:
    target = full["rate"] / 2
    events = (
        (signed_headers(signature), body)
        for signature, body in signed_events(tag + "h", int(target * HALF_SECONDS) + 1)
    )
    return {**openloop.measure(url, events, target, HALF_SECONDS, work), "target": target}


@contextlib.contextmanager
def _gunicorn(app: str, tag: str, work: Path, **env: str) -> Iterator[Served]:
    """`app` under gunicorn with the relay's gunicorn.conf.py (the bare baseline, the
    one-INSERT reference)."""
    port = free_port()
    log = work / f"{tag}.log"
    process = subprocess.Popen(
        [runtime.python(), "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", app],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                wait_http_post(base + "/hooks/bare")
                break
            except requests.RequestException:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit(f"{app} did not come up: see {log}") from None
                time.sleep(0.1)
        yield Served(base + "/hooks/stripe", process.pid)
    finally:
        process.terminate()
        process.wait(30)


def _plain_insert(
    database_url: str, tag: str, work: Path, through: str = "driver"
) -> contextlib.AbstractContextManager[Served]:
    """Issue 5's reference for its targets: bare Flask plus one INSERT and commit per
    request (bench/plain_insert.py), served the same way; `through="sqlalchemy"`, the
    same through SQLAlchemy Core: the chosen stack's floor."""
    database = plain_insert_app.database_for(database_url)
    plain_insert_app.prepare(database)
    return _gunicorn(
        "bench.plain_insert:app",
        tag,
        work,
        PLAIN_INSERT_DATABASE=database,
        PLAIN_INSERT_THROUGH=through,
    )


def wait_http_post(url: str) -> None:
    requests.post(url, json={"id": "ping"}, timeout=1).raise_for_status()


@contextlib.contextmanager
def _relay(database_url: str, tag: str, work: Path) -> Iterator[Served]:
    """The Procfile's web command with the Stripe route."""
    mappings = work / tag / "mappings"
    mappings.mkdir(parents=True)
    (mappings / "stripe.yaml").write_text(MAPPING)
    env = {"MAPPINGS_DIR": str(mappings), "STRIPE_WEBHOOK_SECRET": SECRET, "LOG_LEVEL": "info"}
    with Stack(database_url, work / tag, **env) as s:
        web = s.web(2)
        wait_http(s.web_url + "/readyz")
        yield Served(s.web_url + "/hooks/stripe", web.pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=4, help="each full-speed run")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    options = parser.parse_args()
    results = measure(options.seconds, options.rounds)
    print(f"{'server':17} {'events/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'vs bare':>8}  half rate")
    servers = [
        ("bare", results["bare"]),
        *((f"INSERT {kind}", result) for kind, result in results["plain_insert"].items()),
        ("relay sqlite", results["sqlite"]),
        ("relay pg", results["postgresql"]),
    ]
    for name, result in servers:
        full, half = result["full"], result.get("half")
        at_half = f"{half['rate']:.0f}/s p99 {half['p99']:.2f} ms" if half else ""
        print(
            f"{name:17} {full['rate']:9.0f} {full['p50']:7.2f} {full['p99']:7.2f} "
            f"{result['ratio']:8.2f}  {at_half}"
        )
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
