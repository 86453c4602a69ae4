"""The dispatch baseline: a bare `requests.Session` paced at the limit, nothing else.

`threads` threads share one keep-alive session; each takes the next slot (1/rate s after
the one before, under a lock), sleeps until it and posts a demo-form call (create_lead,
assign_tag, subscribe_lead_to_list) built and encoded beforehand. No database, no
limiter, no retries, no logging: what sending the calls alone costs in CPU, against the
same fake Kartra as the worker. Prints one JSON line: calls, CPU seconds (this
process's user + system time while sending), the rate at which they went, this
process's peak RSS and PSS.

    python -m bench.bare_sender URL --calls 400 [--rate 19.42] [--threads 12]
        [--finish DATABASE_URL]

The default rate is the relay limiter's pace at 20 calls/s (3 % margin).

With `--finish`, the chosen stack's floor for a dispatcher: each call also goes through
tenacity (one attempt, as a call that succeeds costs), records its answer in one UPDATE
of its own row through SQLAlchemy Core (`engine.begin()`, committed) and writes one
structlog JSON line: the least a dispatcher that never loses track of a call and logs
each one does with these libraries, without claiming, rate limiting across processes
or anything else of the relay's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable

import requests

from bench.memory import peak_rss_mb, pss_mb
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


def finisher(database_url: str, calls: int, threads: int) -> Callable[[int, int], None]:
    """`--finish`: a table of one row per call, made before the clock starts; the
    function that records call `n`'s status in its row and logs it."""
    import structlog
    from sqlalchemy import (
        Column,
        DateTime,
        Integer,
        MetaData,
        Table,
        create_engine,
        func,
        insert,
        update,
    )

    url = database_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url, pool_size=threads, max_overflow=0)
    table = Table(
        "floor_calls",
        MetaData(),
        Column("n", Integer, primary_key=True),
        Column("status", Integer),
        Column("finished_at", DateTime(timezone=True)),
    )
    table.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(insert(table), [{"n": n} for n in range(calls)])
    log = structlog.wrap_logger(
        structlog.PrintLogger(sys.stderr),
        processors=[
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.JSONRenderer(),
        ],
    )

    def finish(n: int, status: int) -> None:
        with engine.begin() as connection:
            connection.execute(
                update(table).where(table.c.n == n).values(status=status, finished_at=func.now())
            )
        log.info("kartra_call", n=n, status=status)

    return finish


def send(
    url: str,
    calls: int,
    rate: float,
    threads: int,
    finish: Callable[[int, int], None] | None = None,
) -> dict:
    bodies = [body(n) for n in range(calls)]
    if finish is not None:
        from tenacity import Retrying, stop_after_attempt
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
            if finish is None:
                response = post(n)
            else:
                response = Retrying(stop=stop_after_attempt(3), reraise=True)(post, n)
                finish(n, response.status_code)
            statuses.append(response.status_code)

    def post(n: int) -> requests.Response:
        response = session.post(url, data=bodies[n], headers=HEADERS, timeout=(3.05, 20))
        response.json()
        return response

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
        "rss_mb": peak_rss_mb(os.getpid()),
        "pss_mb": pss_mb(os.getpid()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--rate", type=float, default=round(20 / 1.03, 2))
    parser.add_argument("--threads", type=int, default=12)
    parser.add_argument("--finish", metavar="DATABASE_URL", help="the stack's floor (above)")
    options = parser.parse_args()
    finish = finisher(options.finish, options.calls, options.threads) if options.finish else None
    print(json.dumps(send(options.url, options.calls, options.rate, options.threads, finish)))


if __name__ == "__main__":
    main()
