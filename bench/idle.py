"""Idle latency and idle cost: how soon an idle relay sends a new event to Kartra, and
what an idle worker costs.

For each database (SQLite: `relay serve`, one process with the dispatcher inside;
PostgreSQL: gunicorn web + `relay worker`, woken by LISTEN/NOTIFY), events are posted
one at a time to an idle relay and the time from the 2xx answer to the call's arrival
at the fake Kartra is measured; then the worker's CPU time over 10 idle seconds.
The poll interval (1 s) is the baseline a relay without wake-ups would average half of.

    .venv/bin/python -m bench.idle [--events 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import requests

from bench.stack import Stack
from tests.postgres import Cluster


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(kind: str, database_url: str, events: int, work: Path) -> dict:
    with Stack(database_url, work, WEB_CONCURRENCY="1") as stack:
        if kind == "sqlite":
            dispatcher = stack.serve()
        else:
            stack.web(1)
            dispatcher = stack.worker()
        time.sleep(2)
        delays = []
        with requests.Session() as session:
            for n in range(events):
                session.post(
                    stack.hook, data={"email": f"{kind}{n}@example.com"}, timeout=10
                ).raise_for_status()
                answered = time.time()
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    calls = stack.calls(session)
                    if len(calls) > n:
                        delays.append((calls[n]["time"] - answered) * 1000)
                        break
                    time.sleep(0.002)
                time.sleep(0.05)
        before = cpu_seconds(dispatcher.pid)
        time.sleep(10)
        idle_cpu = (cpu_seconds(dispatcher.pid) - before) / 10
    delays.sort()
    return {
        "kind": kind,
        "p50": statistics.median(delays),
        "p99": delays[max(0, int(len(delays) * 0.99) - 1)],
        "max": delays[-1],
        "idle_cpu": idle_cpu,
    }


def run(events: int = 200) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="relay-idle-"))
    cluster = Cluster().start()
    try:
        return [
            measure("sqlite", f"sqlite:///{work}/idle.db", events, work),
            measure("postgresql", cluster.new_database(), events, work),
        ]
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200)
    results = run(parser.parse_args().events)
    print(f"{'database':12} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'idle CPU':>9}  target")
    failed = False
    for r in results:
        ok = r["p50"] < 50 and r["p99"] < 150 and r["idle_cpu"] < 0.02
        failed |= not ok
        print(
            f"{r['kind']:12} {r['p50']:8.1f} {r['p99']:8.1f} {r['max']:8.1f} "
            f"{r['idle_cpu']:8.1%}  {'PASS' if ok else 'FAIL'} "
            "(p50 < 50 ms, p99 < 150 ms, CPU < 2 %)"
        )
    print("baseline: polling once a second would average 500 ms and reach 1000 ms")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
