"""The admin API's shapes, as marshmallow schemas: they dump what `relay.store.search`
returns, load what callers send, and are the source of the OpenAPI document, so the
document cannot drift from what the API does. `--json` in the CLI dumps the same."""

from __future__ import annotations

from datetime import UTC

from marshmallow import Schema, ValidationError, fields, validate


class Moment(fields.AwareDateTime):
    """A date and time with its offset, that UTC can hold: `9999-12-31T23:59:59-05:00`
    is a year 10000 in UTC, which no query can bind."""

    def _deserialize(self, value, attr, data, **kwargs):
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            return moment.astimezone(UTC)
        except OverflowError:
            raise ValidationError("must fall between the years 1 and 9999 in UTC") from None


EVENT_STATUSES = ("queued", "delivered", "dry_run", "failed", "dead", "ignored", "rejected")
REPLAY_MODES = ("mapping", "stored")


class EventSummarySchema(Schema):
    id = fields.String(required=True)
    route = fields.String(required=True)
    received_at = fields.AwareDateTime(required=True)
    status = fields.String(required=True)
    rule = fields.String(allow_none=True)
    reason = fields.String(allow_none=True)
    email = fields.String(allow_none=True, metadata={"description": "the lead's email"})


class EventPageSchema(Schema):
    events = fields.List(fields.Nested(EventSummarySchema), required=True)
    next_cursor = fields.String(
        allow_none=True, metadata={"description": "pass as `cursor` for the next page"}
    )


class AttemptSchema(Schema):
    id = fields.Integer(required=True)
    number = fields.Integer(required=True)
    started_at = fields.AwareDateTime(required=True)
    duration_ms = fields.Float(required=True)
    request = fields.Raw(metadata={"description": "the call, credentials masked"})
    http_status = fields.Integer(allow_none=True)
    response = fields.Raw(allow_none=True)
    outcome = fields.String(required=True)
    error = fields.String(allow_none=True)
    ambiguous = fields.Boolean(
        required=True,
        metadata={"description": "may repeat an earlier call applied without an answer"},
    )


class DeliverySchema(Schema):
    id = fields.Integer(required=True)
    account = fields.String(required=True)
    rule = fields.String(allow_none=True)
    status = fields.String(required=True)
    attempts = fields.Integer(required=True)
    next_attempt_at = fields.AwareDateTime(required=True)
    lead_id = fields.String(allow_none=True)
    last_error = fields.String(allow_none=True)
    plan = fields.Dict(required=True, metadata={"description": "the rendered Kartra plan"})
    done = fields.List(fields.Integer(), required=True)
    created_at = fields.AwareDateTime(required=True)
    calls = fields.List(fields.Nested(AttemptSchema), required=True)


class EventSchema(Schema):
    id = fields.String(required=True)
    route = fields.String(required=True)
    received_at = fields.AwareDateTime(required=True)
    status = fields.String(required=True)
    rule = fields.String(allow_none=True)
    reason = fields.String(allow_none=True)
    content_type = fields.String(allow_none=True)
    headers = fields.Dict(
        keys=fields.String(), values=fields.String(), metadata={"description": "secrets masked"}
    )
    query = fields.Dict()
    payload = fields.Raw(allow_none=True)
    deliveries = fields.List(fields.Nested(DeliverySchema), required=True)
    awaiting_customer = fields.String(
        allow_none=True,
        metadata={
            "description": "the customer id whose lead identity this rejected event waits "
            "for: it goes out once the route learns it"
        },
    )


class EventQuerySchema(Schema):
    route = fields.String()
    status = fields.String(validate=validate.OneOf(EVENT_STATUSES))
    email = fields.String()
    text = fields.String(metadata={"description": "text anywhere in the payload"})
    since = Moment()
    until = Moment()
    cursor = fields.String(
        validate=validate.Regexp(r"^ev_[0-9a-f]{8,64}$", error="not a cursor this API gave")
    )
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 500))


class ReplayFilterSchema(Schema):
    route = fields.String()
    status = fields.String(validate=validate.OneOf(EVENT_STATUSES))
    email = fields.String()
    text = fields.String()
    since = Moment()
    until = Moment()


class ReplayRequestSchema(Schema):
    mode = fields.String(
        load_default="mapping",
        validate=validate.OneOf(REPLAY_MODES),
        metadata={
            "description": "`mapping`: render the payload again with the current mappings; "
            "`stored`: send the recorded plan again"
        },
    )


class BulkReplayRequestSchema(ReplayRequestSchema):
    event_ids = fields.List(fields.String())
    filter = fields.Nested(ReplayFilterSchema)


class ReplayResultSchema(Schema):
    event_id = fields.String(required=True)
    ok = fields.Boolean(required=True)
    status = fields.String(allow_none=True)
    deliveries = fields.Integer(required=True)
    error = fields.String(allow_none=True)


class ReplayResultsSchema(Schema):
    results = fields.List(fields.Nested(ReplayResultSchema), required=True)
    more = fields.Integer(
        load_default=0,
        metadata={
            "description": "matching events a filter left for the next request "
            "(it replays at most 1,000, oldest first)"
        },
    )


class RetryRequestSchema(Schema):
    event_ids = fields.List(fields.String())
    since = Moment()


class CountsSchema(Schema):
    events = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    deliveries = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    routes = fields.Dict(
        keys=fields.String(),
        values=fields.Dict(keys=fields.String(), values=fields.Integer()),
        required=True,
    )


class AccountSchema(Schema):
    name = fields.String(required=True)
    paused = fields.Boolean(required=True)
    reason = fields.String(allow_none=True)
    credentials = fields.Boolean(required=True)
    counts = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    calls_today = fields.Integer(required=True)


class AccountListSchema(Schema):
    accounts = fields.List(fields.Nested(AccountSchema), required=True)


class PauseRequestSchema(Schema):
    reason = fields.String(load_default="paused by an operator")


class ErrorSchema(Schema):
    error = fields.Raw(required=True)


class IdentitySchema(Schema):
    route = fields.String(required=True, validate=validate.Length(1, 100))
    account = fields.String(load_default="default", validate=validate.Length(1, 64))
    customer_id = fields.String(
        required=True,
        validate=validate.Length(1, 200),
        metadata={"description": "the sender's customer id, e.g. Stripe's cus_..."},
    )
    email = fields.Email(required=True, validate=validate.Length(max=320))
    updated_at = fields.AwareDateTime(dump_only=True)


class IdentityListSchema(Schema):
    identities = fields.List(fields.Nested(IdentitySchema), required=True)


class IdentityQuerySchema(Schema):
    route = fields.String()
