"""`POST /hooks/<route>`: parse, map, store, answer. No network, one transaction."""

from __future__ import annotations

import hashlib

from flask import Blueprint, current_app, jsonify, redirect, request
from werkzeug.exceptions import RequestEntityTooLarge

from relay.ingest.parse import BodyError, header_dict, parse_body
from relay.logs import get_logger
from relay.mapping import RenderError
from relay.store import NewEvent, store_event

bp = Blueprint("ingest", __name__)
log = get_logger("relay.ingest")

# Credentials a sender or a proxy may put in headers; never stored.
DROPPED_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})


@bp.post("/hooks/<route>")
def receive(route: str):
    relay = current_app.extensions["relay"]
    mapping = relay.mappings.get(route)
    if mapping is None:
        return jsonify(error=f"unknown route {route!r}"), 404
    raw = _read_body(current_app.config["MAX_CONTENT_LENGTH"])
    try:
        body = parse_body(request.content_type, raw)
    except BodyError as exc:
        log.info("event_refused", route=route, status=exc.status, reason=str(exc))
        return jsonify(error=str(exc)), exc.status
    headers = header_dict(request.headers, DROPPED_HEADERS)
    query = request.args.to_dict()
    payload = {"body": body, "headers": headers, "query": query, "route": route}
    rendered = mapping.render(payload)
    stored = store_event(
        relay.engine,
        NewEvent(
            route=route,
            dedupe_key=_dedupe_key(mapping, payload, raw),
            content_type=request.content_type,
            headers=headers,
            query=query,
            body=raw,
            payload=body,
            status=rendered.status,
            rule=rendered.rule,
            reason=rendered.reason,
            plans=rendered.plans,
        ),
    )
    if stored.created and rendered.plans:
        relay.wake.set()
    log.info(
        "event_received",
        route=route,
        event_id=stored.event_id,
        status=stored.status,
        rule=rendered.rule,
        reason=rendered.reason,
        deliveries=len(rendered.plans),
        duplicate=not stored.created,
    )
    if mapping.redirect and _is_browser_form_post():
        return redirect(mapping.redirect, code=303)
    answer = {"event_id": stored.event_id, "status": stored.status}
    if not stored.created:
        return jsonify({**answer, "duplicate": True}), 200
    return jsonify(answer), mapping.status_code


def _read_body(limit: int) -> bytes:
    """The whole body, or 413 as soon as it is known to be larger than `limit`.

    Read from the WSGI input itself: for a streamed (chunked) body werkzeug's own
    limit silently truncates at `limit` bytes, and a truncated event is a corrupt one.
    """
    if request.content_length is not None and request.content_length > limit:
        raise RequestEntityTooLarge()
    raw = request.environ["wsgi.input"].read(limit + 1)
    if len(raw) > limit:
        raise RequestEntityTooLarge()
    return raw


def _dedupe_key(mapping, payload, raw: bytes) -> str:
    """The sender's own event id where the mapping says where it is, else the body's hash."""
    try:
        event_id = mapping.event_id(payload)
    except RenderError:
        event_id = None
    if event_id:
        return "id:" + event_id[:290]
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _is_browser_form_post() -> bool:
    return request.mimetype in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ) and "text/html" in request.headers.get("Accept", "")
