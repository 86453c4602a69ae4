"""The dashboard at `/admin`: server-rendered pages over the same use cases as the API.

Sign-in exchanges the admin token for a session cookie (HttpOnly, SameSite=Lax, Secure
over https; signed with a key derived from the token, so every web process agrees on it and
changing the token signs everyone out); after ADMIN_SIGNIN_ATTEMPTS wrong tokens from one
address in 15 minutes, sign-in answers 429 until the window slides. Every POST carries
a per-session CSRF token, checked before anything else. Payloads and Kartra answers are
shown through Jinja's autoescaping, and a Content-Security-Policy without scripts backs
that up.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from datetime import timedelta
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from werkzeug.exceptions import HTTPException

from relay.admin import charts
from relay.admin.operations import (
    ReplayError,
    accounts_overview,
    known_account,
    replay,
    replay_many,
)
from relay.ingest.limits import retry_after, signin_wait, with_retry_after
from relay.store import maintenance, queue, search, sessions, timeline
from relay.store.tables import utcnow

bp = Blueprint("dashboard", __name__, url_prefix="/admin", template_folder="templates")

FAILURE_STATUSES = ("dead", "failed", "rejected")
REFRESH_SECONDS = 15
MAX_FLASHED = 10
SINCE = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class _SessionInterface(SecureCookieSessionInterface):
    """Marks the cookie Secure whenever the browser reached the relay over https, directly
    or through a proxy that says so (Heroku's router sets X-Forwarded-Proto), and not on
    a laptop's plain http://127.0.0.1, where a Secure cookie would never come back. A
    client that lies about the header only makes its own cookie stricter."""

    def open_session(self, app, request):
        """None (Flask's null session, never saved) for a webhook: `/hooks/...` never
        uses one, and opening and saving one (a signing serializer, the cookie) cost
        every webhook about 8 % of its request once ADMIN_TOKEN turned the dashboard on."""
        if request.path.startswith("/hooks/"):
            return None
        return super().open_session(app, request)

    def get_cookie_secure(self, app) -> bool:
        forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip()
        return request.is_secure or forwarded.lower() == "https"


@bp.record_once
def _configure_session(state) -> None:
    app = state.app
    app.session_interface = _SessionInterface()
    token = app.extensions["relay"].config.admin_token
    app.secret_key = hmac.new(token.encode(), b"relay admin session", hashlib.sha256).digest()
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_NAME="relay_admin",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
    )


def _relay():
    return current_app.extensions["relay"]


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


@bp.context_processor
def _template_helpers() -> dict[str, Any]:
    return {"csrf_token": csrf_token, "colours": charts.COLOURS}


@bp.app_template_filter("pretty")
def _pretty(value: Any) -> str:
    """JSON for a <pre>: a plain string, so autoescaping still applies."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


@bp.before_request
def _guard():
    if request.method == "POST":
        sent = request.form.get("csrf_token", "")
        if not sent or not hmac.compare_digest(sent, session.get("csrf", "")):
            abort(400, "the form's CSRF token is missing or out of date: reload the page")
    if request.endpoint != "dashboard.login" and not _signed_in():
        # back to the page afterwards; a form's target answers only its POST
        back = request.full_path if request.method == "GET" else None
        return redirect(url_for("dashboard.login", next=back))
    values = [*(request.view_args or {}).values(), *request.args.values(), *request.form.values()]
    if any("\x00" in value for value in values if isinstance(value, str)):
        abort(400, "NUL characters are not allowed")  # PostgreSQL text cannot hold one
    return None


def _signed_in() -> bool:
    """A session from sign-in that no sign-out has ended (a copied cookie included)."""
    session_id = session.get("sid")
    if not session.get("admin") or not isinstance(session_id, str):
        return False
    if sessions.ended(_relay().engine, session_id):
        session.clear()
        return False
    return True


@bp.errorhandler(HTTPException)
def _error_page(exc: HTTPException):
    """A page, not the JSON the hooks answer with: a person is reading it."""
    page = render_template(
        "admin/error.html", code=exc.code, name=exc.name, description=exc.description
    )
    return page, exc.code


@bp.after_request
def _headers(response):
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/login", methods=["GET", "POST"])
def login():
    error = None
    if request.method == "POST":
        wait = signin_wait()
        if wait:
            error = f"Too many failed sign-ins: try again in {retry_after(wait)} s."
            return with_retry_after((render_template("admin/login.html", error=error), 429), wait)
        expected = _relay().config.admin_token.encode()
        if hmac.compare_digest(request.form.get("token", "").strip().encode(), expected):
            session.clear()
            session.permanent = True
            session["admin"] = True
            session["sid"] = secrets.token_urlsafe(32)
            return redirect(_safe_next(request.args.get("next")))
        signin_wait(failed=True)
        error = "That is not the admin token."
    return render_template("admin/login.html", error=error), 401 if error else 200


def _safe_next(target: str | None) -> str:
    """Only a path inside the dashboard, never another site."""
    if target and target.startswith("/admin") and not target.startswith("//"):
        return target
    return url_for("dashboard.overview")


@bp.post("/logout")
def logout():
    lifetime = current_app.permanent_session_lifetime
    sessions.end(_relay().engine, session["sid"], utcnow() + lifetime)
    session.clear()
    return redirect(url_for("dashboard.login"))


@bp.get("/")
def overview():
    engine = _relay().engine
    limit = _relay().config.kartra_rate_limit
    hour, day = timedelta(hours=1), timedelta(days=1)
    minute, twenty = timedelta(minutes=1), timedelta(minutes=20)
    return render_template(
        "admin/overview.html",
        counts=search.counts(engine, since=utcnow() - day),
        events_hour=charts.events_chart(
            timeline.events_by_outcome(engine, hour, minute), "Events per minute, last hour"
        ),
        events_day=charts.events_chart(
            timeline.events_by_outcome(engine, day, twenty), "Events per 20 minutes, last day"
        ),
        calls_hour=charts.rate_chart(
            timeline.kartra_call_rate(engine, hour, minute),
            limit,
            "Kartra calls per second, last hour",
        ),
        calls_day=charts.rate_chart(
            timeline.kartra_call_rate(engine, day, twenty),
            limit,
            "Kartra calls per second, last day",
        ),
        refresh=REFRESH_SECONDS * 2,
    )


@bp.get("/events")
def events():
    """Filters in the query string, so a search can be bookmarked or sent to a colleague.
    Refreshing is opt-in (`live=1`): a page reloading under a half-typed search loses it."""
    keys = ("route", "status", "email", "text", "since")
    args = {k: request.args.get(k, "").strip() or None for k in keys}
    since = SINCE.get(args["since"] or "")
    where = search.EventFilter(
        **{k: v for k, v in args.items() if k != "since"},
        since=utcnow() - since if since else None,
    )
    cursor = request.args.get("cursor") or None
    live = bool(request.args.get("live")) and not cursor
    return render_template(
        "admin/events.html",
        page=search.search_events(_relay().engine, where, cursor=cursor),
        args={k: v for k, v in args.items() if v},
        live=live,
        spans=SINCE,
        routes=sorted(_relay().mappings),
        statuses=("queued", "delivered", "dry_run", "failed", "dead", "ignored", "rejected"),
        refresh=REFRESH_SECONDS if live else None,
    )


@bp.get("/events/<event_id>")
def event(event_id: str):
    found = search.get_event(_relay().engine, event_id)
    if found is None:
        abort(404, f"no event {event_id}")
    live = any(d.status == "pending" for d in found.deliveries)
    return render_template(
        "admin/event.html", event=found, refresh=REFRESH_SECONDS // 3 if live else None
    )


@bp.post("/events/<event_id>/replay")
def replay_event(event_id: str):
    relay = _relay()
    try:
        done = replay(relay.engine, relay.mappings, event_id, request.form.get("mode", "mapping"))
    except LookupError:
        abort(404, f"no event {event_id}")
    except ReplayError as exc:
        flash(str(exc), "error")
    else:
        relay.wake.set()
        flash(f"Replayed: {done.status}, {done.deliveries} new delivery(ies).", "ok")
    return redirect(url_for("dashboard.event", event_id=event_id))


@bp.post("/events/<event_id>/redact")
def redact_event(event_id: str):
    if request.form.get("confirm") != "yes":
        flash("Tick the box to confirm: redacting cannot be undone.", "error")
        return redirect(url_for("dashboard.event", event_id=event_id))
    try:
        maintenance.redact(_relay().engine, event_ids=[event_id])
    except maintenance.UnknownEvents:
        abort(404, f"no event {event_id}")
    except maintenance.StoreConflict as exc:
        flash(str(exc), "error")
    else:
        flash("Redacted: the payload, headers, plans and Kartra calls are erased.", "ok")
    return redirect(url_for("dashboard.event", event_id=event_id))


@bp.get("/failures")
def failures():
    engine = _relay().engine
    sections = {
        status: search.search_events(engine, search.EventFilter(status=status), limit=100)
        for status in FAILURE_STATUSES
    }
    paused = [a for a in accounts_overview(engine, _relay().config) if a.paused]
    return render_template("admin/failures.html", sections=sections, paused=paused)


@bp.post("/replay")
def replay_selected():
    """The ticked events, or with `every=<status>` every event in that failure status."""
    relay = _relay()
    every, more = request.form.get("every"), 0
    if every in FAILURE_STATUSES:
        ids, more = search.event_ids(relay.engine, search.EventFilter(status=every))
    else:
        ids, every = request.form.getlist("event_id"), None
    if not ids:
        flash("Tick at least one event to replay.", "error")
        return redirect(url_for("dashboard.failures"))
    mode = request.form.get("mode", "mapping")
    results = replay_many(relay.engine, relay.mappings, ids, mode, status=every)
    relay.wake.set()
    done = sum(r.ok for r in results)
    flash(f"Replayed {done} of {len(results)} event(s).", "ok" if done == len(results) else "error")
    refused = [r for r in results if not r.ok]
    for result in refused[:MAX_FLASHED]:
        flash(f"{result.event_id}: {result.error}", "error")
    if len(refused) > MAX_FLASHED:
        flash(f"... and {len(refused) - MAX_FLASHED} more not replayed.", "error")
    if more:
        flash(f"{more} more {every} event(s) wait: replay again for the next ones.", "error")
    return redirect(url_for("dashboard.failures"))


@bp.post("/retry")
def retry_dead():
    relay = _relay()
    requeued = maintenance.retry_dead(relay.engine)
    relay.wake.set()
    flash(f"{sum(r.deliveries for r in requeued)} dead delivery(ies) queued again.", "ok")
    return redirect(url_for("dashboard.failures"))


@bp.get("/accounts")
def accounts():
    relay = _relay()
    return render_template(
        "admin/accounts.html",
        accounts=accounts_overview(relay.engine, relay.config),
        limit=relay.config.kartra_rate_limit,
    )


@bp.post("/accounts/<name>/<action>")
def steer_account(name: str, action: str):
    relay = _relay()
    if not known_account(relay.engine, relay.config, name, relay.mappings):
        abort(404)
    if action == "pause":
        queue.pause_account(relay.engine, name, "paused by an operator")
    elif action == "resume":
        queue.resume_account(relay.engine, name)
        relay.wake.set()
    else:
        abort(404)
    flash(f"{name}: {action}d.", "ok")
    return redirect(url_for("dashboard.accounts"))
