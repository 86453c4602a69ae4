"""Dispatch: one worker (the Procfile's `worker`) drains a backlog against the fake Kartra
at 20 calls/s per App with 250 ms +- 100 ms latency, on PostgreSQL.

Measures, at the fake Kartra: sustained calls per second as a share of the limit
(first to last call), HTTP 429s, the busiest 1-second window; and the worker's CPU
time per call (from /proc, counted from when it is up and idle) and its peak RSS.
Bounded: 2,000 calls at 20/s take 100 s; the wait has a deadline.

    .venv/bin/python -m bench.dispatch [--events 2000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.cluster import busiest_window
from bench.load import cpu_seconds, fill_queue
from bench.memory import peak_rss_mb, pss_mb
from bench.stack import Stack
from tests.postgres import Cluster

LIMIT = 20


def measure(events: int = 2000) -> dict:
    work = Path(tempfile.mkdtemp(prefix="relay-dispatch-"))
    cluster = Cluster().start()
    try:
        database_url = cluster.new_database()
        fake = ("--rate-limit", str(LIMIT), "--latency-ms", "250", "--jitter-ms", "100")
        with Stack(database_url, work, *fake) as stack:
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
        "cpu_ms_per_call": cpu / max(1, len(calls)) * 1000,
        "worker_rss_mb": rss,
        "worker_pss_mb": pss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    result = measure(parser.parse_args().events)
    print(
        f"{result['calls']}/{result['events']} calls, {result['rate']:.2f} calls/s "
        f"({result['share']:.1%} of {LIMIT}), {result['http_429']} x 429, busiest second "
        f"{result['busiest_window']}, worker CPU {result['cpu_ms_per_call']:.2f} ms/call"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
