"""`POST /hooks/<route>`: verify, parse, map, store, answer. One transaction.

Verification comes first, on the exact bytes received: a delivery that fails it is
answered 401 with no detail, logged with the reason (never a secret), counted, and
nothing is stored. The only network the ingest path may use is a PayPal certificate
download, once per certificate (relay/ingest/verify/paypal.py).
"""

from __future__ import annotations

import functools
import hashlib
import time

from flask import Blueprint, current_app, g, jsonify, redirect, request
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

from relay.ingest.forms import cors_headers, foreign_origin
from relay.ingest.limits import form_wait, retry_after, with_retry_after
from relay.ingest.parse import BodyError, parse_body
from relay.ingest.verify import Delivery, Ping, Rejected, Unavailable, count_failure, verify
from relay.ingest.verify.token import without_field
from relay.logs import get_logger, mask_emails_in
from relay.mapping import RenderError
from relay.mapping.filters import IDENTITIES
from relay.mapping.model import Identity
from relay.store import NewEvent, store_event
from relay.store.identities import find
from relay.store.search import mask_credentials
from relay.store.tables import events

bp = Blueprint("ingest", __name__)
log = get_logger("relay.ingest")

# Credentials a sender or a proxy may put in headers; never stored.
DROPPED_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})
_CONTENT_TYPE_LENGTH = events.c.content_type.type.length
# A public route (`verify: none`, a form on a web page) has no event id and no sender
# that retries: the same body again within this many seconds is a double click, later
# it is a person submitting the form again (../shared/sources/SOURCES.md: "hash of body
# over a short window"). The window is a slot of the clock, so a double click that
# straddles two slots makes two events: create_lead, tags and lists change nothing the
# second time.
FORM_DEDUPE_WINDOW = 600
# Seconds a sender is asked to wait when its signature cannot be checked now.
UNAVAILABLE_RETRY_AFTER = 60


@bp.post("/hooks/<route>", provide_automatic_options=False)
def receive(route: str):
    relay = current_app.extensions["relay"]
    mapping = relay.mappings.get(route)
    if mapping is None:
        return jsonify(error=f"unknown route {route!r}"), 404
    form = mapping.form
    origin = foreign_origin(form, request)
    if origin is not None:
        log.info("event_refused", route=route, status=403, reason="foreign origin", origin=origin)
        return _refuse(mapping, "posts from this site are not accepted", 403)
    if form is not None and form.rate_limit is not None:
        wait = form_wait(route, form.rate_limit, form.trust_forwarded_for)
        if wait:
            log.info("event_refused", route=route, status=429, reason="rate limit")
            message = f"too many posts from your address; try again in {retry_after(wait)} s"
            return with_retry_after(_refuse(mapping, message, 429), wait)
    raw = _read_body(current_app.config["MAX_CONTENT_LENGTH"])
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        # a signature is over the bytes as sent: the relay reads them as they are
        message = f"Content-Encoding {encoding[:40]!r} is not supported: send the body as it is"
        log.info("event_refused", route=route, status=415, reason=message)
        return _refuse(mapping, message, 415)
    received_headers = {name.lower(): value for name, value in request.headers.items()}
    try:
        verify(mapping.verify, _delivery(raw, received_headers))
    except Ping as exc:
        log.info("sender_ping", route=route, detail=str(exc))
        g.ingest_outcome = "ping"
        return jsonify(status="ping"), 200
    except Rejected as exc:
        count_failure(route)
        log.warning(
            "verification_failed", route=route, scheme=mapping.verify["scheme"], reason=str(exc)
        )
        return jsonify(error="unauthorized"), 401
    except Unavailable as exc:
        log.warning(
            "verification_unavailable",
            route=route,
            scheme=mapping.verify["scheme"],
            reason=str(exc),
        )
        answer = jsonify(error="cannot check the signature now; retry later")
        return answer, 503, {"Retry-After": str(UNAVAILABLE_RETRY_AFTER)}
    try:
        body = parse_body(request.content_type, raw)
    except BodyError as exc:
        log.info("event_refused", route=route, status=exc.status, reason=str(exc))
        return _refuse(mapping, str(exc), exc.status)
    kept_headers = {k: v for k, v in received_headers.items() if k not in DROPPED_HEADERS}
    query = {k: v[0] if len(v) == 1 else v for k, v in request.args.lists()}  # as forms are
    headers, query = _without_token(mapping.verify, kept_headers, query, body)
    # verified already: a credential or signature is not stored, nor shown to templates
    headers, query = mask_credentials(headers), mask_credentials(query)
    payload = {"body": body, "headers": headers, "query": query, "route": route}
    rendered = mapping.render({**payload, IDENTITIES: functools.partial(find, relay.engine, route)})
    stored = store_event(
        relay.engine,
        NewEvent(
            route=route,
            dedupe_key=_dedupe_key(mapping, payload, raw),
            content_type=_content_type(),
            headers=headers,
            query=query,
            body=_stored_raw(mapping.verify, raw),
            payload=body,
            status=rendered.status,
            rule=rendered.rule,
            reason=rendered.reason,
            plans=rendered.plans,
            identity=_identity(rendered.identity),
            awaiting=rendered.awaiting,
        ),
    )
    if stored.created and rendered.plans:
        relay.wake.set()
    g.ingest_outcome = stored.status if stored.created else "duplicate"
    log.info(
        "event_received",
        route=route,
        event_id=stored.event_id,
        status=stored.status,
        rule=rendered.rule,
        reason=mask_emails_in(rendered.reason),
        deliveries=len(rendered.plans),
        duplicate=not stored.created,
    )
    if _is_browser_form_post():
        if stored.status == "rejected" and mapping.error_redirect:
            return redirect(mapping.error_redirect, code=303)
        if mapping.redirect:
            return redirect(mapping.redirect, code=303)
    answer = {"event_id": stored.event_id, "status": stored.status}
    if not stored.created:
        return jsonify({**answer, "duplicate": True}), 200
    return jsonify(answer), mapping.status_code


@bp.route("/hooks/<route>", methods=["OPTIONS"])
def preflight(route: str):
    """A `fetch()` from another site asks first; only the route's `form.origins` are told yes."""
    mapping = current_app.extensions["relay"].mappings.get(route)
    if mapping is None or not cors_headers(mapping.form, request.headers.get("Origin")):
        return "", 403
    return "", 204


@bp.after_request
def _cors(response):
    origin = request.headers.get("Origin")
    route = (request.view_args or {}).get("route") if origin else None
    mapping = current_app.extensions["relay"].mappings.get(route) if route else None
    if mapping is not None:
        response.headers.update(cors_headers(mapping.form, origin))
    return response


def _refuse(mapping, message: str, status: int):
    """A refusal: a browser posting the form is sent to the error page, if there is one."""
    if mapping.error_redirect and _is_browser_form_post():
        return redirect(mapping.error_redirect, code=303)
    return jsonify(error=message), status


def _clock() -> float:
    return current_app.extensions.get("relay.clock", time.time)()


@bp.route("/hooks/<route>", methods=["HEAD"])
def probe(route: str):
    """ThriveCart (and others) send HEAD when a URL is saved and refuse it unless it is 2xx."""
    known = route in current_app.extensions["relay"].mappings
    return ("", 200) if known else ("", 404)


def _delivery(raw: bytes, headers: dict[str, str]) -> Delivery:
    """The request as verifiers see it. Every header is there (lower-case names),
    `Authorization` included (HTTP Basic needs it), unlike the stored copy. `relay.clock` and
    `relay.paypal_certificates` in `app.extensions` let tests fix the time and the
    certificate source."""
    extensions = current_app.extensions
    return Delivery(
        body=raw,
        headers=headers,
        query=request.args.to_dict(flat=False),
        now=_clock(),
        certificates=extensions.get("relay.paypal_certificates"),
    )


def _without_token(spec, headers: dict, query: dict, body: dict) -> tuple[dict, dict]:
    """Headers and query without the route's shared token, which must not be stored or
    reach a template; a token sent as a body field is removed from the parsed body."""
    if isinstance(spec, dict) and spec["scheme"] == "token":
        headers = {k: v for k, v in headers.items() if k != spec.get("header", "").lower()}
        query = {k: v for k, v in query.items() if k != spec.get("query")}
        body.pop(spec.get("field", ""), None)
    return headers, query


def _stored_raw(spec, raw: bytes) -> bytes:
    """The raw body to keep: without the route's token when it travels as a body field."""
    if isinstance(spec, dict) and spec["scheme"] == "token" and "field" in spec:
        return without_field(raw, spec["field"])
    return raw


def _read_body(limit: int) -> bytes:
    """The whole body, or 413 as soon as it is known to be larger than `limit`.

    Read from the WSGI input itself: for a streamed (chunked) body werkzeug's own
    limit silently truncates at `limit` bytes, and a truncated event is a corrupt one.
    """
    announced = request.content_length
    if announced is not None and announced > limit:
        raise RequestEntityTooLarge()
    raw = request.environ["wsgi.input"].read(limit + 1)
    if len(raw) > limit:
        raise RequestEntityTooLarge()
    if announced is not None and len(raw) < announced:
        # the client went away mid-upload: gunicorn returns what came
        raise BadRequest(
            f"the body ended after {len(raw)} of the {announced} bytes of its Content-Length"
        )
    return raw


def _content_type() -> str | None:
    """The header as stored: a sender may send any length, the column keeps 200 characters
    (the body is parsed already, so the rest is only ever shown)."""
    return (request.content_type or "")[:_CONTENT_TYPE_LENGTH] or None


def _dedupe_key(mapping, payload, raw: bytes) -> str:
    """The sender's own event id where the mapping says where it is, else the body's hash:
    on a public route, the hash within the current slot of FORM_DEDUPE_WINDOW seconds;
    on a verified one, for as long as the event is kept (a sender that retries sends the
    same body hours later)."""
    try:
        event_id = mapping.event_id(payload)
    except RenderError:
        event_id = None
    if event_id and len(event_id) <= 290:
        return "id:" + event_id
    if event_id:  # the column holds 300: a longer id is hashed whole, never cut
        return "id-sha256:" + hashlib.sha256(event_id.encode()).hexdigest()
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    if mapping.verify == "none":
        return f"{digest}:{int(_clock() // FORM_DEDUPE_WINDOW)}"
    return digest


def _is_browser_form_post() -> bool:
    """A browser asks for a page; a sender's webhook almost never does, and the header is
    cheaper to look at than the parsed content type."""
    return "text/html" in request.headers.get("Accept", "") and request.mimetype in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    )


def _identity(identity: Identity | None) -> tuple[str, str, str] | None:
    if identity is None:
        return None
    return (identity.account, identity.customer_id, identity.email)
