"""Dispatch: one worker (the Procfile's `worker`) drains a backlog against the fake Kartra
at 20 calls/s per App with 250 ms +- 100 ms latency, on PostgreSQL.

Measures, at the fake Kartra: sustained calls per second as a share of the limit
(first to last call), HTTP 429s, the busiest 1-second window, how many connections
carried the calls; and the worker's CPU
time per call (from /proc, counted from when it is up and idle) and its peak RSS.
First, against the same fake, the baseline: a bare requests.Session paced at the
limiter's rate (`bench/bare_sender.py`), its CPU per call; then the chosen stack's
floor, the same sender recording each call in one SQLAlchemy UPDATE on PostgreSQL and
logging it (`--finish`), its CPU per call and peak RSS. Bounded: 2,000 calls at 20/s
take 100 s, each baseline's 400 calls 21 s; the waits have deadlines.

    .venv/bin/python -m bench.dispatch [--events 2000] [--bare-calls 400]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from bench import runtime
from bench.cluster import busiest_window
from bench.load import cpu_seconds, fill_queue
from bench.memory import peak_rss_mb, pss_mb
from bench.stack import ROOT, Stack
from tests.postgres import Cluster

LIMIT = 20


def bare(stack: Stack, calls: int, *options: str) -> dict:
    """A baseline's figures (`options` for bench.bare_sender); then the fake forgets its
    calls and rate windows."""
    done = subprocess.run(
        [
            runtime.python(),
            "-m",
            "bench.bare_sender",
            stack.fake_url + "/api",
            "--calls",
            str(calls),
            *options,
        ],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=calls / LIMIT * 2 + 60,
    )
    requests.post(stack.fake_url + "/_fake/reset", timeout=10).raise_for_status()
    time.sleep(1)
    return json.loads(done.stdout)


def measure(events: int = 2000, bare_calls: int = 400) -> dict:
    work = Path(tempfile.mkdtemp(prefix="relay-dispatch-"))
    cluster = Cluster().start()
    try:
        database_url = cluster.new_database()
        fake = ("--rate-limit", str(LIMIT), "--latency-ms", "250", "--jitter-ms", "100")
        with Stack(database_url, work, *fake) as stack:
            baseline = bare(stack, bare_calls) if bare_calls else None
            floor = (
                bare(stack, bare_calls, "--finish", cluster.new_database()) if bare_calls else None
            )
            worker = stack.worker()
            time.sleep(3)
            cpu_before = cpu_seconds(worker.pid)
            fill_queue(database_url, events, "dispatch")
            calls = stack.calls_once_answered(events, within=events / LIMIT * 2 + 60)
            cpu = cpu_seconds(worker.pid) - cpu_before
            rss, pss = peak_rss_mb(worker.pid), pss_mb(worker.pid)
    finally:
        cluster.stop()
    ok = sorted(c["time"] for c in calls if c["status"] == 200)
    span = ok[-1] - ok[0] if len(ok) > 1 else 0.0
    rate = (len(ok) - 1) / span if span else 0.0
    return {
        "events": events,
        "calls": len(ok),
        "rate": rate,
        "share": rate / LIMIT,
        "http_429": sum(1 for c in calls if c["status"] == 429),
        "busiest_window": busiest_window(ok),
        "connections": len({c["peer"] for c in calls}),
        "cpu_ms_per_call": cpu / max(1, len(calls)) * 1000,
        "worker_rss_mb": rss,
        "worker_pss_mb": pss,
        "bare_cpu_ms_per_call": baseline and baseline["cpu_ms_per_call"],
        "bare_rate": baseline and baseline["rate"],
        "floor_cpu_ms_per_call": floor and floor["cpu_ms_per_call"],
        "floor_rate": floor and floor["rate"],
        "floor_rss_mb": floor and floor["rss_mb"],
        "floor_pss_mb": floor and floor["pss_mb"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--bare-calls", type=int, default=400, help="0: no baseline")
    options = parser.parse_args()
    result = measure(options.events, options.bare_calls)
    print(
        f"{result['calls']}/{result['events']} calls, {result['rate']:.2f} calls/s "
        f"({result['share']:.1%} of {LIMIT}), {result['http_429']} x 429, busiest second "
        f"{result['busiest_window']}, {result['connections']} connections, worker CPU "
        f"{result['cpu_ms_per_call']:.2f} ms/call"
    )
    if result["bare_cpu_ms_per_call"] is not None:
        print(
            f"baseline, a bare requests.Session at {result['bare_rate']:.2f} calls/s: "
            f"{result['bare_cpu_ms_per_call']:.2f} ms/call"
        )
        print(
            f"the stack's floor (+ tenacity, one SQLAlchemy UPDATE, a structlog line) at "
            f"{result['floor_rate']:.2f} calls/s: {result['floor_cpu_ms_per_call']:.2f} ms/call, "
            f"peak RSS {result['floor_rss_mb']:.0f} MB"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
