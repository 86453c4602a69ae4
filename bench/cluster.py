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
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from tests.postgres import Cluster

ROOT = Path(__file__).resolve().parents[1]
APP_ID, KEY, PASSWORD = "bench-app", "bench-key", "bench-password"
LIMIT = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=0.5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        args,
        env=env,
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


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
    processes: list[subprocess.Popen] = []
    try:
        fake_port, web_port = free_port(), free_port()
        fake_url = f"http://127.0.0.1:{fake_port}"
        env = {
            **os.environ,
            "DATABASE_URL": cluster.new_database(),
            "PORT": str(web_port),
            "KARTRA_API_URL": fake_url + "/api",
            "KARTRA_APP_ID": APP_ID,
            "KARTRA_API_KEY": KEY,
            "KARTRA_API_PASSWORD": PASSWORD,
            "WEB_CONCURRENCY": str(options.web),
            "LOG_LEVEL": "warning",
        }
        processes.append(
            start(
                [
                    sys.executable,
                    "-m",
                    "relay.kartra.fake",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(fake_port),
                    "--app-id",
                    APP_ID,
                    "--api-key",
                    KEY,
                    "--api-password",
                    PASSWORD,
                    "--tags",
                    "Relay Demo",
                    "--lists",
                    "Relay Demo",
                    "--rate-limit",
                    str(LIMIT),
                    "--latency-ms",
                    "250",
                    "--jitter-ms",
                    "100",
                ],
                env,
                work / "fake.log",
            )
        )
        subprocess.run(
            [sys.executable, "-m", "relay", "db", "upgrade"],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            timeout=60,
        )
        processes.append(
            start(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "--config",
                    "python:relay.gunicorn_conf",
                    "--bind",
                    f"127.0.0.1:{web_port}",
                    "app:app",
                ],
                env,
                work / "web.log",
            )
        )
        wait_http(fake_url + "/_fake/calls")
        wait_http(f"http://127.0.0.1:{web_port}/readyz")

        bodies = [
            {"email": f"lead{i}@example.com", "first_name": f"step-{k}"}
            for k in range(options.events_per_lead)
            for i in range(options.leads)
        ]
        hook = f"http://127.0.0.1:{web_port}/hooks/demo-form"
        with requests.Session() as session:
            for body in bodies:
                session.post(hook, data=body, timeout=10).raise_for_status()
        for n in range(options.workers):
            processes.append(
                start([sys.executable, "-m", "relay", "worker"], env, work / f"worker-{n}.log")
            )

        expected = len(bodies)
        deadline = time.monotonic() + expected / LIMIT * 3 + 60
        calls: list[dict] = []
        while time.monotonic() < deadline:
            calls = requests.get(fake_url + "/_fake/calls", timeout=10).json()
            if sum(1 for c in calls if c["status"] == 200) >= expected:
                break
            time.sleep(1)
        leads = requests.get(fake_url + "/_fake/leads", timeout=10).json()
        report(calls, expected, {str(lead["id"]): lead["email"] for lead in leads})
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
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
