"""Prometheus `/metrics`: what the relay did (counters kept by each process) and what
state it is in (read from the database at each scrape).

Two sources, because they answer different questions and fail differently:
- Counters and histograms (events received, signature failures, Kartra call latency
  and error codes, rate-limiter waits, deliveries finished) live in the process that
  did the work. Under gunicorn every worker keeps its own; with
  `PROMETHEUS_MULTIPROC_DIR` set (before start) they write to files there and any
  worker's scrape adds them all up. The dispatcher's figures appear on `/metrics` when
  it runs inside the web process (`serve`) or on the same machine with the same dir.
- The queue's state (depth, the oldest due delivery's age, paused accounts, events
  and deliveries per status, the dispatchers' heartbeat) is the database's, identical
  whichever process answers, so it is read, not counted.

The dispatcher's own figures are declared in `relay.admin.dispatch_metrics`, which
imports neither Flask nor this module's queries, so that the worker process does not
load them; importing it here registers them, so `/metrics` lists them in every process.
"""

from __future__ import annotations

import hmac
import os
from datetime import UTC, datetime

from flask import Blueprint, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select, true

from relay.admin import dispatch_metrics  # noqa: F401 (registers the dispatcher's figures)
from relay.store.tables import accounts, deliveries, events, utcnow, workers

bp = Blueprint("metrics", __name__)

EVENTS_RECEIVED = Counter(
    "relay_events_received", "Webhook requests answered, by route and outcome", ["route", "outcome"]
)
VERIFICATION_FAILURES = Counter(
    "relay_verification_failures", "Requests refused for a bad or missing signature", ["route"]
)


def _known_route() -> str:
    route = (request.view_args or {}).get("route", "")
    return route if route in current_app.extensions["relay"].mappings else "(unknown)"


@bp.after_app_request
def _count_ingest(response: Response) -> Response:
    """Count each answer of `POST /hooks/<route>` by what became of the event: for a
    2xx, the outcome the view left in `g.ingest_outcome` (a stored event's status,
    `duplicate`, or a sender's `ping`), else the HTTP status."""
    if request.endpoint != "ingest.receive":
        return response
    route = _known_route()
    if response.status_code == 401:
        VERIFICATION_FAILURES.labels(route).inc()
    outcome = f"http_{response.status_code}"
    if response.status_code == 303:
        outcome = "redirected"
    elif response.status_code < 300:
        outcome = g.get("ingest_outcome", outcome)
    EVENTS_RECEIVED.labels(route, outcome).inc()
    return response


@bp.get("/metrics")
def metrics():
    expected = current_app.extensions["relay"].config.admin_token or ""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    given = token.strip().encode()  # as the API reads it
    if scheme.lower() != "bearer" or not hmac.compare_digest(given, expected.encode()):
        return Response("admin token required\n", 401, {"WWW-Authenticate": "Bearer"})
    body = _process_figures() + generate_latest(_state_registry())
    return Response(body, 200, {"Content-Type": CONTENT_TYPE_LATEST})


def _process_figures() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def _state_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueState(current_app.extensions["relay"].engine))
    return registry


class QueueState:
    """A collector reading the queue's state from the database at scrape time."""

    def __init__(self, engine):
        self.engine = engine

    def collect(self):
        now = utcnow()
        with self.engine.connect() as conn:
            by_route = conn.execute(
                select(events.c.route, events.c.status, func.count()).group_by(
                    events.c.route, events.c.status
                )
            ).all()
            by_status = conn.execute(
                select(deliveries.c.status, func.count()).group_by(deliveries.c.status)
            ).all()
            paused = set(conn.execute(select(accounts.c.name).where(accounts.c.paused)).scalars())
            due = conn.execute(
                select(func.count(), func.min(deliveries.c.next_attempt_at)).where(
                    deliveries.c.status == "pending",
                    deliveries.c.next_attempt_at <= now,
                    deliveries.c.account.not_in(paused) if paused else true(),
                )
            ).one()
            last_beat = conn.execute(select(func.max(workers.c.seen_at))).scalar()
            waiting = conn.execute(
                select(func.count()).where(events.c.awaiting_customer.is_not(None))
            ).scalar()
        yield _gauge(
            "relay_events_stored", "Events on record, by route and status", by_route, "route"
        )
        yield _gauge("relay_deliveries_stored", "Deliveries on record, by status", by_status)
        yield GaugeMetricFamily(
            "relay_queue_depth", "Deliveries due now, paused accounts' excepted", value=due[0]
        )
        oldest = (now - _aware(due[1])).total_seconds() if due[1] else 0.0
        yield GaugeMetricFamily(
            "relay_oldest_due_delivery_age_seconds",
            "How long the oldest due delivery has waited",
            value=max(oldest, 0.0),
        )
        yield GaugeMetricFamily(
            "relay_paused_accounts", "Kartra accounts paused by an error", value=len(paused)
        )
        yield GaugeMetricFamily(
            "relay_events_waiting_for_customer",
            "Rejected events waiting for a customer's lead email, sent once it is learned",
            value=waiting,
        )
        age = (now - _aware(last_beat)).total_seconds() if last_beat else float("nan")
        yield GaugeMetricFamily(
            "relay_worker_heartbeat_age_seconds",
            "Seconds since a dispatcher last said it was alive (NaN: none running)",
            value=age,
        )


def _aware(moment: datetime | str) -> datetime:
    """An aggregate such as min() bypasses UTCDateTime, and SQLite then returns the
    stored text: it is naive UTC, made aware here."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _gauge(name: str, documentation: str, rows, first_label: str | None = None):
    labels = [first_label, "status"] if first_label else ["status"]
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for *values, count in rows:
        family.add_metric([str(v) for v in values], count)
    return family
