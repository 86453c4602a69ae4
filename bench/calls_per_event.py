"""Average Kartra calls per event over the sender fixtures, against one call per command.

Every fixture in ../shared/sources/fixtures/ goes through its recipe in
mappings/examples/, is stored, and is delivered by the dispatcher to the fake Kartra
served on 127.0.0.1. Each fixture is sent twice, the second time as a repeat customer
(a new event for a lead the relay has already seen), which is how a real corpus looks.
The naive baseline sends one call per command: the lead command, then each action.

    .venv/bin/python -m bench.calls_per_event
"""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path

from tenacity import wait_none
from werkzeug.serving import make_server

from relay import logs
from relay.config import Account, Config
from relay.dispatch.limiter import RateLimiter
from relay.dispatch.worker import Dispatcher
from relay.ingest.parse import parse_body
from relay.kartra.fake import FakeKartra, create_app
from relay.mapping import load_mapping
from relay.store import NewEvent, connect, migrate, store_event
from tests.ingest.senders import EXAMPLES, RECIPE_ENV, fixture, fixtures

KEY, PASSWORD = "bench-key", "bench-password"


def corpus() -> list[tuple[str, dict]]:
    """(route, payload) for every fixture, each twice."""
    events = []
    for repeat in (0, 1):
        for sender, name in fixtures():
            recipe = EXAMPLES / f"{sender}.yaml"
            if not recipe.exists():
                continue
            body, headers = fixture(sender, name)
            headers = {k.lower(): v for k, v in headers.items()}
            payload = {
                "body": parse_body(headers.get("content-type"), body),
                "headers": headers,
                "query": {},
                "route": sender,
            }
            events.append((sender, payload, repeat))
    return events


def measure() -> dict:
    logs.configure("error")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    mappings = {
        path.stem: load_mapping(path, env=RECIPE_ENV) for path in sorted(EXAMPLES.glob("*.yaml"))
    }
    rendered = []
    for route, payload, repeat in corpus():
        result = mappings[route].render(payload)
        rendered.append((route, payload, repeat, result))
    plans = [plan for *_, result in rendered for plan in result.plans]
    fake = FakeKartra(
        app_id="bench",
        accounts={KEY: PASSWORD},
        rate_limit=1000,
        tags={a["tag_name"] for p in plans for a in p["actions"] if "tag_name" in a},
        lists={a["list_name"] for p in plans for a in p["actions"] if "list_name" in a},
        sequences={
            a["sequence_name"]: {str(a.get("step", "1"))}
            for p in plans
            for a in p["actions"]
            if "sequence_name" in a
        },
    )
    server = make_server("127.0.0.1", 0, create_app(fake), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    work = Path(tempfile.mkdtemp(prefix="relay-calls-"))
    engine = connect(f"sqlite:///{work}/bench.db")
    migrate(engine)
    accounts = {
        name: Account(name, KEY, PASSWORD) for name in {p["account"] for p in plans} | {"default"}
    }
    config = Config(
        kartra_url=f"http://127.0.0.1:{server.server_port}/api",
        kartra_app_id="bench",
        accounts=accounts,
    )
    dispatcher = Dispatcher(config, engine, limiter=RateLimiter(1000), retry_wait=wait_none())
    try:
        naive = queued = 0
        for n, (route, payload, _, result) in enumerate(rendered):
            store_event(
                engine,
                NewEvent(
                    route=route,
                    dedupe_key=f"bench-{n}",
                    content_type=None,
                    headers={},
                    query={},
                    body=b"",
                    payload=payload["body"],
                    status=result.status,
                    rule=result.rule,
                    reason=result.reason,
                    plans=result.plans,
                ),
            )
            queued += bool(result.plans)
            naive += sum(len(p["actions"]) + (1 if p.get("lead") else 0) for p in result.plans)
            while dispatcher.run_once():
                pass
        calls = len(fake.call_log())
    finally:
        server.shutdown()
        server.server_close()
        engine.dispose()
    return {"events": len(rendered), "delivered": queued, "calls": calls, "naive": naive}


def main() -> None:
    r = measure()
    print(f"{'events (fixtures x2)':28} {r['events']}")
    print(f"{'events with deliveries':28} {r['delivered']}")
    print(
        f"{'Kartra calls, relay':28} {r['calls']}  "
        f"({r['calls'] / r['delivered']:.2f} per delivered event)"
    )
    print(
        f"{'Kartra calls, naive':28} {r['naive']}  "
        f"({r['naive'] / r['delivered']:.2f} per delivered event)"
    )
    print(f"{'relay / naive':28} {r['calls'] / r['naive']:.2f}")


if __name__ == "__main__":
    main()
