"""Probes: `/healthz` says the process is up; `/readyz` says it can do its job."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from relay.store import schema_is_current

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
    ready = all(checks.values())
    return jsonify(status="ready" if ready else "not ready", checks=checks), 200 if ready else 503
