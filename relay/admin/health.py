"""Probes: `/healthz` says the process is up; `/readyz` says it can do its job.

`/readyz` always reports the dispatchers' heartbeat, but fails on it only when asked
(`/readyz?require=worker`): the web process must keep accepting events while no
dispatcher runs (they wait safely in the queue), so taking it out of a load balancer
for a dead worker would lose the very events the worker is there to send. Point the
worker's own monitor, or an alert, at `?require=worker`.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import select

from relay.store import schema_is_current
from relay.store.tables import utcnow, workers

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    relay = current_app.extensions["relay"]
    checks = {"mappings": len(relay.mappings) > 0}
    try:
        checks["database"] = schema_is_current(relay.engine)
    except Exception:
        checks["database"] = False
    worker = _worker_heartbeat(relay) if checks["database"] else {"fresh": False}
    if request.args.get("require") == "worker":
        checks["worker"] = worker["fresh"]
    ready = all(checks.values())
    return (
        jsonify(status="ready" if ready else "not ready", checks=checks, worker=worker),
        200 if ready else 503,
    )


def _worker_heartbeat(relay) -> dict:
    """Fresh when a dispatcher beat within half its lease (it beats every sixth)."""
    with relay.engine.connect() as conn:
        seen = conn.execute(select(workers.c.seen_at).order_by(workers.c.seen_at.desc())).first()
    if seen is None:
        return {"fresh": False, "seconds_since_beat": None}
    age = (utcnow() - seen.seen_at).total_seconds()
    return {
        "fresh": age <= relay.config.delivery_lease / 2,
        "seconds_since_beat": round(age, 1),
    }
