"""Helpers the dispatch and backlog benchmarks share: filling a queue fast, reading a
process's CPU time, and the calls in a window of the fake Kartra's call log."""

from __future__ import annotations

import os
from pathlib import Path

from bench.stack import ROOT
from relay.mapping import load_mapping
from relay.store import connect
from relay.store.events import NewEvent, store_events

DEMO = ROOT / "mappings" / "demo-form.yaml"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fill_queue(database_url: str, count: int, tag: str, leads: int | None = None) -> None:
    """`count` demo-form events, rendered by the demo-form mapping and stored with their
    deliveries in transactions of 100, as the ingest path stores them (only faster: no
    HTTP). The table is left unanalyzed, as a real burst leaves it: the worker
    refreshes the statistics itself when its claims turn slow. `leads` bounds how many
    distinct leads they are for (two events each by default, so per-lead order is
    exercised)."""
    mapping = load_mapping(DEMO)
    leads = leads or max(1, count // 2)
    engine = connect(database_url)
    try:
        batch = []
        for n in range(count):
            body = {"email": f"{tag}{n % leads}@example.com", "first_name": f"step-{n // leads}"}
            payload = {"body": body, "headers": {}, "query": {}, "route": "demo-form"}
            rendered = mapping.render(payload)
            batch.append(
                NewEvent(
                    route="demo-form",
                    dedupe_key=f"bench:{tag}:{n}",
                    content_type="application/x-www-form-urlencoded",
                    headers={},
                    query={},
                    body=repr(body).encode(),
                    payload=body,
                    status=rendered.status,
                    rule=rendered.rule,
                    reason=rendered.reason,
                    plans=rendered.plans,
                )
            )
            if len(batch) == 100 or n == count - 1:
                store_events(engine, batch)
                batch = []
    finally:
        engine.dispose()


def calls_in(calls: list[dict], start: float, end: float) -> list[dict]:
    return [c for c in calls if start <= c["time"] < end]
