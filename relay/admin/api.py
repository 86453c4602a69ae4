"""The admin JSON API under `/api`, for scripts and other tools; the same use cases as
the dashboard and the CLI.

Every endpoint is declared with `_endpoint`, which both registers the Flask view and
records its schemas; `/api/openapi.json` is generated from that record, so the
document describes exactly the endpoints served. A bearer token (`ADMIN_TOKEN`)
guards everything but the document itself, compared in constant time.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, current_app, jsonify, request
from marshmallow import Schema, ValidationError, fields

from relay.admin import schemas
from relay.admin.operations import (
    ReplayError,
    accounts_overview,
    known_account,
    replay,
    replay_many,
)
from relay.mapping.filters import email as normal_email
from relay.mapping.model import is_email
from relay.store import identities, maintenance, queue, search

bp = Blueprint("api", __name__, url_prefix="/api")


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    rule: str
    summary: str
    query: type[Schema] | None
    body: type[Schema] | None
    response: type[Schema]
    errors: tuple[int, ...]


ENDPOINTS: list[Endpoint] = []


def _endpoint(
    method: str,
    rule: str,
    summary: str,
    *,
    response: type[Schema],
    query: type[Schema] | None = None,
    body: type[Schema] | None = None,
    errors: tuple[int, ...] = (),
) -> Callable:
    def register(view):
        ENDPOINTS.append(
            Endpoint(view.__name__, method, rule, summary, query, body, response, errors)
        )
        bp.add_url_rule(rule, view.__name__, view, methods=[method])
        return view

    return register


def _relay():
    return current_app.extensions["relay"]


@bp.before_request
def _require_token():
    if request.endpoint == "api.openapi":
        return None
    expected = _relay().config.admin_token or ""
    given = request.headers.get("Authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), expected.encode()
    ):
        answer = jsonify(error="a valid admin token is required: Authorization: Bearer TOKEN")
        return answer, 401, {"WWW-Authenticate": 'Bearer realm="relay admin"'}
    return None


NUL_FREE = r"^[^\x00]*$"


@bp.before_request
def _refuse_nul():
    """A NUL character in a path or query value is refused: PostgreSQL text cannot hold
    one, so it can name nothing, and the document's `pattern` says so (`_nul_free`)."""
    values = [*(request.view_args or {}).values(), *request.args.keys(), *request.args.values()]
    if any("\x00" in value for value in values if isinstance(value, str)):
        return jsonify(error="NUL characters are not allowed"), 400
    return None


@bp.errorhandler(ValidationError)
def _invalid(exc: ValidationError):
    return jsonify(error=exc.messages), 400


def _query(schema: type[Schema]) -> dict:
    return schema().load(request.args.to_dict())


def _body(schema: type[Schema]) -> dict:
    """The JSON body loaded by `schema`; no body means `{}`. A body that is not JSON is
    refused, never read as `{}`: an empty retry filter would requeue every dead delivery."""
    raw = request.get_data()
    if not raw.strip():
        return schema().load({})
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise ValidationError({"body": ["not valid JSON"]}) from None
    if _unstorable(data):
        raise ValidationError({"body": ["NUL characters are not allowed, nor lone surrogates"]})
    return schema().load(data)


def _unstorable(value) -> bool:
    """Text no database takes: NUL (PostgreSQL), a lone surrogate (UTF-8, both)."""
    if isinstance(value, str):
        return "\x00" in value or not value.isascii() and _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_unstorable(k) or _unstorable(v) for k, v in value.items())
    return isinstance(value, list) and any(_unstorable(item) for item in value)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _not_found(what: str):
    return jsonify(error=f"no {what}"), 404


@_endpoint(
    "GET",
    "/events",
    "Search events, newest first, a page at a time",
    query=schemas.EventQuerySchema,
    response=schemas.EventPageSchema,
    errors=(400,),
)
def list_events():
    args = _query(schemas.EventQuerySchema)
    cursor, limit = args.pop("cursor", None), args.pop("limit")
    page = search.search_events(
        _relay().engine, search.EventFilter(**args), cursor=cursor, limit=limit
    )
    return schemas.EventPageSchema().dump(page)


@_endpoint(
    "GET",
    "/events/<event_id>",
    "One event: payload, rule, plan, deliveries and every Kartra call",
    response=schemas.EventSchema,
    errors=(404,),
)
def get_event(event_id: str):
    event = search.get_event(_relay().engine, event_id)
    if event is None:
        return _not_found(f"event {event_id}")
    return schemas.EventSchema().dump(event)


@_endpoint(
    "POST",
    "/events/<event_id>/replay",
    "Replay one event with the current mappings, or re-send its stored plan",
    body=schemas.ReplayRequestSchema,
    response=schemas.ReplayResultSchema,
    errors=(400, 404, 409),
)
def replay_event(event_id: str):
    relay = _relay()
    mode = _body(schemas.ReplayRequestSchema)["mode"]
    try:
        done = replay(relay.engine, relay.mappings, event_id, mode)
    except LookupError:
        return _not_found(f"event {event_id}")
    except ReplayError as exc:
        return jsonify(error=str(exc)), 409
    relay.wake.set()
    return {"event_id": event_id, "ok": True, "status": done.status, "deliveries": done.deliveries}


@_endpoint(
    "POST",
    "/replay",
    "Replay the events listed, or every event matching a filter",
    body=schemas.BulkReplayRequestSchema,
    response=schemas.ReplayResultsSchema,
    errors=(400,),
)
def replay_events():
    relay = _relay()
    args = _body(schemas.BulkReplayRequestSchema)
    if bool(args.get("event_ids")) == bool(args.get("filter")):
        raise ValidationError({"event_ids": ["give event_ids or a filter, not both"]})
    ids, more, status = args.get("event_ids"), 0, None
    if not ids:
        ids, more = search.event_ids(relay.engine, search.EventFilter(**args["filter"]))
        status = args["filter"].get("status")
    results = replay_many(relay.engine, relay.mappings, ids, args["mode"], status=status)
    relay.wake.set()
    return schemas.ReplayResultsSchema().dump({"results": results, "more": more})


class RequeuedSchema(Schema):
    event_id = fields.String(required=True)
    status = fields.String(required=True)
    deliveries = fields.Integer(required=True)


class RetryResultSchema(Schema):
    requeued = fields.List(fields.Nested(RequeuedSchema), required=True)


@_endpoint(
    "POST",
    "/deliveries/retry",
    "Queue dead deliveries again, carrying on where they stopped",
    body=schemas.RetryRequestSchema,
    response=RetryResultSchema,
    errors=(400,),
)
def retry_dead():
    relay = _relay()
    args = _body(schemas.RetryRequestSchema)
    requeued = maintenance.retry_dead(
        relay.engine, event_ids=args.get("event_ids"), since=args.get("since")
    )
    relay.wake.set()
    return RetryResultSchema().dump({"requeued": requeued})


@_endpoint(
    "GET",
    "/accounts",
    "Kartra accounts: paused or not, deliveries per status, calls today",
    response=schemas.AccountListSchema,
)
def list_accounts():
    relay = _relay()
    return schemas.AccountListSchema().dump(
        {"accounts": accounts_overview(relay.engine, relay.config)}
    )


class AccountStateSchema(Schema):
    name = fields.String(required=True)
    paused = fields.Boolean(required=True)


@_endpoint(
    "POST",
    "/accounts/<name>/pause",
    "Pause an account: its deliveries wait, retries untouched",
    body=schemas.PauseRequestSchema,
    response=AccountStateSchema,
    errors=(400, 404),
)
def pause_account(name: str):
    relay = _relay()
    reason = _body(schemas.PauseRequestSchema)["reason"]
    if not known_account(relay.engine, relay.config, name, relay.mappings):
        return _not_found(f"account {name!r}")
    queue.pause_account(relay.engine, name, reason)
    return {"name": name, "paused": True}


@_endpoint(
    "POST",
    "/accounts/<name>/resume",
    "Resume a paused account",
    response=AccountStateSchema,
    errors=(404,),
)
def resume_account(name: str):
    relay = _relay()
    resumed = queue.resume_account(relay.engine, name)
    if not resumed and not known_account(relay.engine, relay.config, name, relay.mappings):
        return _not_found(f"account {name!r}")
    relay.wake.set()
    return {"name": name, "paused": False}


class CountsQuerySchema(Schema):
    since = schemas.Moment()


@_endpoint(
    "GET",
    "/counts",
    "Events per status and per route, deliveries per status",
    query=CountsQuerySchema,
    response=schemas.CountsSchema,
    errors=(400,),
)
def get_counts():
    since = _query(CountsQuerySchema).get("since")
    return schemas.CountsSchema().dump(search.counts(_relay().engine, since=since))


class RedactRequestSchema(Schema):
    event_ids = fields.List(fields.String())
    email = fields.Email()


class RedactResultSchema(Schema):
    redacted = fields.List(fields.String(), required=True)


@_endpoint(
    "POST",
    "/redact",
    "Erase the personal data of events, by id or by the lead's email (GDPR)",
    body=RedactRequestSchema,
    response=RedactResultSchema,
    errors=(400, 404, 409),
)
def redact():
    args = _body(RedactRequestSchema)
    if bool(args.get("event_ids")) == bool(args.get("email")):
        raise ValidationError({"email": ["give event_ids or an email: one of the two"]})
    try:
        done = maintenance.redact(
            _relay().engine, event_ids=args.get("event_ids"), email=args.get("email")
        )
    except maintenance.UnknownEvents as exc:
        return jsonify(error=str(exc)), 404
    except maintenance.StoreConflict as exc:
        return jsonify(error=str(exc)), 409
    return {"redacted": done}


@_endpoint(
    "GET",
    "/identities",
    "Sender customer ids and the lead emails they stand for",
    query=schemas.IdentityQuerySchema,
    response=schemas.IdentityListSchema,
    errors=(400,),
)
def list_identities():
    route = _query(schemas.IdentityQuerySchema).get("route")
    known = identities.all_identities(_relay().engine, route=route)
    return schemas.IdentityListSchema().dump({"identities": known})


@_endpoint(
    "PUT",
    "/identities",
    "Say which lead a customer id stands for; the events waiting for it go out within seconds",
    body=schemas.IdentitySchema,
    response=schemas.IdentitySchema,
    errors=(400, 404),
)
def set_identity():
    args = _body(schemas.IdentitySchema)
    args["customer_id"] = args["customer_id"].strip()
    args["email"] = normal_email(args["email"])
    if not args["customer_id"]:
        raise ValidationError({"customer_id": ["must not be blank"]})
    if not is_email(args["email"]):
        raise ValidationError({"email": ["Not a valid email address."]})
    relay = _relay()
    if args["route"] not in relay.mappings:
        return _not_found(f"route {args['route']!r}")
    if not known_account(relay.engine, relay.config, args["account"], relay.mappings):
        return _not_found(f"account {args['account']!r}")
    identities.remember(relay.engine, **args)
    return schemas.IdentitySchema().dump(args)


@bp.get("/openapi.json")
def openapi():
    return jsonify(openapi_document())


def openapi_document() -> dict:
    spec = APISpec(
        title="Kartra Relay admin API",
        version="1",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": "Find events, see what Kartra answered, replay, steer accounts."},
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.schema("Error", schema=schemas.ErrorSchema)
    paths: dict[str, dict] = {}
    for endpoint in ENDPOINTS:
        path = "/api" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", endpoint.rule)
        operation: dict = {
            "summary": endpoint.summary,
            "operationId": endpoint.name,
            "security": [{"bearer": []}],
            "parameters": [
                {"in": "path", "name": name, "required": True, "schema": {"type": "string"}}
                for name in re.findall(r"<(?:\w+:)?(\w+)>", endpoint.rule)
            ],
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"application/json": {"schema": endpoint.response}},
                },
                "401": _error_response("no valid admin token"),
                **{str(code): _error_response(_ERRORS[code]) for code in _errors(endpoint)},
            },
        }
        if endpoint.query:
            operation["parameters"].append({"in": "query", "schema": endpoint.query})
        if endpoint.body:
            operation["requestBody"] = {
                "required": any(f.required for f in endpoint.body().load_fields.values()),
                "content": {"application/json": {"schema": endpoint.body}},
            }
        paths.setdefault(path, {})[endpoint.method.lower()] = operation
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    document = spec.to_dict()
    for operations in document["paths"].values():
        for operation in operations.values():
            for parameter in operation["parameters"]:
                _nul_free(parameter["schema"])
    for schema in document["components"]["schemas"].values():
        _nul_free(schema)
    return document


def _errors(endpoint: Endpoint) -> list[int]:
    """The endpoint's own error statuses, and 400 wherever it reads any input."""
    reads = endpoint.query or endpoint.body or "<" in endpoint.rule
    return sorted({*endpoint.errors, 400} if reads else set(endpoint.errors))


def _nul_free(schema: dict) -> None:
    """Every free-text string in the document is declared NUL-free (see `_refuse_nul`)."""
    if schema.get("type") == "string" and "enum" not in schema:
        schema.setdefault("pattern", NUL_FREE)
    for child in (*schema.get("properties", {}).values(), schema.get("items")):
        if isinstance(child, dict):
            _nul_free(child)
    if isinstance(schema.get("additionalProperties"), dict):
        _nul_free(schema["additionalProperties"])


_ERRORS = {400: "invalid request", 404: "not found", 409: "not possible in the present state"}


def _error_response(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": "Error"}}}
