"""Backlog under load, on PostgreSQL with the Procfile's processes (gunicorn web with 2
processes, one worker) and the fake Kartra at 20 calls/s, 250 ms +- 100 ms.

1. Idle: demo-form events posted at 100/s for 15 s to a relay with an empty queue:
   ingest p50/p99 (time to the 2xx).
2. Backlog: 10,000 events queued at once (stored as ingest stores them, in
   transactions of 100, without HTTP), then events posted at 100/s for a window
   (60 s by default) while the worker drains: calls per second reaching the fake
   Kartra in the window against the 20/s limit, 429s, and ingest p99 during the
   drain against idle.

Draining 10,000 calls at 20/s takes over 8 minutes, more than the whole suite's budget:
the drain rate is measured over the window with the backlog in place, not to the end.
Peak RSS (and current PSS) of the web processes (master and workers) and of the worker
is read at the end.

    .venv/bin/python -m bench.backlog [--backlog 10000] [--window 60]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.load import calls_in, fill_queue, paced_posts, percentile
from bench.memory import peak_rss_mb, pss_mb
from bench.stack import Stack
from tests.postgres import Cluster

LIMIT = 20
RATE = 100


def latency(values: list[float]) -> dict:
    return {
        "posted": len(values),
        "p50": statistics.median(values),
        "p99": percentile(values, 0.99),
    }


def measure(backlog: int = 10_000, window: float = 60.0, idle_seconds: float = 15.0) -> dict:
    work = Path(tempfile.mkdtemp(prefix="relay-backlog-"))
    cluster = Cluster().start()
    try:
        database_url = cluster.new_database()
        fake = ("--rate-limit", str(LIMIT), "--latency-ms", "250", "--jitter-ms", "100")
        with Stack(database_url, work, *fake) as stack:
            web = stack.web(2)
            worker = stack.worker()
            time.sleep(2)
            idle = latency(paced_posts(stack.hook, RATE, idle_seconds, "idle"))
            filled = time.monotonic()
            fill_queue(database_url, backlog, "backlog", leads=backlog)
            fill_seconds = time.monotonic() - filled
            start = time.time()
            during = latency(paced_posts(stack.hook, RATE, window, "during"))
            end = time.time()
            calls = calls_in(stack.calls(), start, end)
            web_rss, worker_rss = peak_rss_mb(web.pid), peak_rss_mb(worker.pid)
            web_pss, worker_pss = pss_mb(web.pid), pss_mb(worker.pid)
    finally:
        cluster.stop()
    ok = sum(1 for c in calls if c["status"] == 200)
    rate = ok / (end - start)
    return {
        "backlog": backlog,
        "fill_seconds": fill_seconds,
        "window_seconds": end - start,
        "calls": ok,
        "rate": rate,
        "share": rate / LIMIT,
        "http_429": sum(1 for c in calls if c["status"] == 429),
        "idle": idle,
        "during": during,
        "p99_ratio": during["p99"] / idle["p99"],
        "web_rss_mb": web_rss,
        "worker_rss_mb": worker_rss,
        "web_pss_mb": web_pss,
        "worker_pss_mb": worker_pss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--window", type=float, default=60.0)
    options = parser.parse_args()
    r = measure(options.backlog, options.window)
    print(
        f"drain {r['rate']:.2f} calls/s ({r['share']:.1%} of {LIMIT}) over "
        f"{r['window_seconds']:.0f} s, {r['http_429']} x 429; ingest p99 idle "
        f"{r['idle']['p99']:.1f} ms, during the drain {r['during']['p99']:.1f} ms "
        f"({r['p99_ratio']:.2f}x)"
    )
    print(json.dumps(r))


if __name__ == "__main__":
    main()
