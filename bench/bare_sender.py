"""The dispatch baseline: a bare `requests.Session` paced at the limit, nothing else.

`threads` threads share one keep-alive session; each takes the next slot (1/rate s after
the one before, under a lock), sleeps until it and posts a demo-form call (create_lead,
assign_tag, subscribe_lead_to_list) built and encoded beforehand. No database, no
limiter, no retries, no logging: what sending the calls alone costs in CPU, against the
same fake Kartra as the worker. Prints one JSON line: calls, CPU seconds (this
process's user + system time while sending), the rate at which they went.

    python -m bench.bare_sender URL --calls 400 [--rate 19.42] [--threads 12]

The default rate is the relay limiter's pace at 20 calls/s (3 % margin).
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import requests

from bench.stack import APP_ID, KEY, PASSWORD
from relay.kartra.form import encode

HEADERS = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}


def body(n: int) -> str:
    return encode(
        {
            "app_id": APP_ID,
            "api_key": KEY,
            "api_password": PASSWORD,
            "lead": {"email": f"bare{n}@example.com", "first_name": "step-0"},
            "actions": [
                {"cmd": "create_lead"},
                {"cmd": "assign_tag", "tag_name": "Relay Demo"},
                {"cmd": "subscribe_lead_to_list", "list_name": "Relay Demo"},
            ],
        }
    )


def send(url: str, calls: int, rate: float, threads: int) -> dict:
    bodies = [body(n) for n in range(calls)]
    session = requests.Session()
    lock = threading.Lock()
    state = {"next": 0, "slot": time.monotonic() + 0.1}
    statuses: list[int] = []

    def sender() -> None:
        while True:
            with lock:
                n = state["next"]
                if n == calls:
                    return
                state["next"] = n + 1
                slot = state["slot"]
                state["slot"] = slot + 1 / rate
            delay = slot - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            response = session.post(url, data=bodies[n], headers=HEADERS, timeout=(3.05, 20))
            response.json()
            statuses.append(response.status_code)

    started, cpu = time.monotonic(), time.process_time()
    pool = [threading.Thread(target=sender) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    cpu, took = time.process_time() - cpu, time.monotonic() - started
    return {
        "calls": len(statuses),
        "ok": statuses.count(200),
        "cpu_seconds": cpu,
        "cpu_ms_per_call": cpu / max(1, len(statuses)) * 1000,
        "rate": len(statuses) / took,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--rate", type=float, default=round(20 / 1.03, 2))
    parser.add_argument("--threads", type=int, default=12)
    options = parser.parse_args()
    print(json.dumps(send(options.url, options.calls, options.rate, options.threads)))


if __name__ == "__main__":
    main()
