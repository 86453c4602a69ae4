"""Three workers and two web processes on PostgreSQL against the fake Kartra.

Measures, at the fake Kartra: sustained calls per second against the App's 20/s limit,
HTTP 429s, the busiest 1-second window, and whether each lead's events arrived in the
order they were posted. Bounded: a fixed backlog, every wait has a deadline, and all
traffic stays on 127.0.0.1.

    .venv/bin/python -m bench.cluster [--leads 300] [--events-per-lead 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import requests

from bench.stack import Stack
from tests.postgres import Cluster

LIMIT = 20


def busiest_window(times: list[float]) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - 1.0:
            j += 1
        best = max(best, i - j + 1)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=300)
    parser.add_argument("--events-per-lead", type=int, default=2)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--web", type=int, default=2)
    options = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    cluster = Cluster().start()
    try:
        stack = Stack(
            cluster.new_database(),
            work,
            "--rate-limit",
            str(LIMIT),
            "--latency-ms",
            "250",
            "--jitter-ms",
            "100",
        )
        with stack:
            stack.web(options.web)
            bodies = [
                {"email": f"lead{i}@example.com", "first_name": f"step-{k}"}
                for k in range(options.events_per_lead)
                for i in range(options.leads)
            ]
            with requests.Session() as session:
                for body in bodies:
                    session.post(stack.hook, data=body, timeout=10).raise_for_status()
            for _ in range(options.workers):
                stack.worker()
            expected = len(bodies)
            calls = stack.calls_once_answered(expected, within=expected / LIMIT * 3 + 60)
            leads = requests.get(stack.fake_url + "/_fake/leads", timeout=10).json()
            report(calls, expected, {str(lead["id"]): lead["email"] for lead in leads})
    finally:
        cluster.stop()


def report(calls: list[dict], expected: int, emails: dict[str, str]) -> None:
    ok = [c for c in calls if c["status"] == 200]
    times = [c["time"] for c in ok]
    rejected = sum(1 for c in calls if c["status"] == 429)
    span = max(times) - min(times) if len(times) > 1 else 0.0
    rate = (len(ok) - 1) / span if span else 0.0
    order_ok = True
    seen: dict[str, int] = {}
    for call in sorted(ok, key=lambda c: c["time"]):
        lead = call["params"].get("lead", {})
        step = int(str(lead.get("first_name", "step-0")).split("-")[1])
        key = lead.get("email") or emails.get(str(lead.get("id")))
        if step < seen.get(key, -1):
            order_ok = False
        seen[key] = step
    rows = [
        ("calls delivered", f"{len(ok)} / {expected}", len(ok) >= expected),
        ("sustained calls/s", f"{rate:.2f} ({rate / LIMIT:.0%} of {LIMIT})", rate >= 18),
        ("HTTP 429 answers", str(rejected), rejected == 0),
        ("busiest 1 s window", f"{busiest_window(times)} calls", busiest_window(times) <= LIMIT),
        ("per-lead order held", str(order_ok), order_ok),
    ]
    for name, value, passed in rows:
        print(f"{name:22} {value:28} {'PASS' if passed else 'FAIL'}")
    print(
        json.dumps(
            {
                "calls": len(ok),
                "rate": round(rate, 2),
                "http_429": rejected,
                "busiest_window": busiest_window(times),
                "order_held": order_ok,
            }
        )
    )
    if not all(passed for _, _, passed in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
