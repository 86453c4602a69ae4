"""Backlog under load, on PostgreSQL with the Procfile's processes (gunicorn web with 2
processes, one worker) and the fake Kartra at 20 calls/s, 250 ms +- 100 ms.

1. Idle: after 3 s of the same load to warm it up, demo-form events posted at 100/s
   for 15 s to a relay with no backlog: ingest p50/p99 (time from when each post was
   due to its 2xx, `bench/openloop.py`).
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
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

from bench import openloop
from bench.load import calls_in, fill_queue
from bench.memory import peak_rss_mb, pss_mb
from bench.stack import Stack
from tests.postgres import Cluster

LIMIT = 20
RATE = 100


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def posts(url: str, seconds: float, tag: str, work: Path) -> dict:
    """Demo-form events at RATE/s for `seconds`, from 8 keep-alive connections, each
    timed from when it was due (`bench.openloop`)."""
    count = int(RATE * seconds) + 1
    forms = ((FORM, urlencode({"email": f"{tag}{n}@example.com"}).encode()) for n in range(count))
    return openloop.measure(url, forms, RATE, seconds, work, connections=8)


def measure(backlog: int = 10_000, window: float = 60.0, idle_seconds: float = 15.0) -> dict:
    work = Path(tempfile.mkdtemp(prefix="relay-backlog-"))
    cluster = Cluster().start()
    try:
        database_url = cluster.new_database()
        fake = ("--rate-limit", str(LIMIT), "--latency-ms", "250", "--jitter-ms", "100")
        with Stack(database_url, work, *fake) as stack:
            web = stack.web(2)
            worker = stack.worker()
            posts(stack.hook, 3, "warm", work)  # every thread connected, caches filled
            idle = posts(stack.hook, idle_seconds, "idle", work)
            filled = time.monotonic()
            fill_queue(database_url, backlog, "backlog", leads=backlog)
            fill_seconds = time.monotonic() - filled
            start = time.time()
            during = posts(stack.hook, window, "during", work)
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
