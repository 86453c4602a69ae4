"""The shape of a mapping file, as marshmallow schemas, and its errors as `Problem`s.

The schemas check shape only: keys, types, enums, the Kartra command table. What
needs Jinja (template syntax, filter names, lookup tables) and what needs the whole
file (duplicate rule names) is checked by `compile.py`. Every schema refuses unknown
keys with a "did you mean" hint, because a misspelt optional key (`emial`) would
otherwise be dropped without a word and the lead created without its address.
"""

from __future__ import annotations

import re
from typing import Any

from marshmallow import (
    EXCLUDE,
    INCLUDE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates_schema,
)

from relay.kartra.commands import ACTIONS, LEAD_COMMANDS, LEAD_FIELDS
from relay.mapping.errors import Problem
from relay.mapping.expressions import JINJA_MARKERS, did_you_mean
from relay.mapping.verify import check_verify

ROUTE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
ACCOUNT_NAME = re.compile(r"[a-z0-9_]{1,64}\Z")  # validate.Regexp matches at the start only
MAX_ROUTE = 100  # the stored columns' sizes
TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
FIELD_IDENTIFIER = re.compile(r"[A-Za-z0-9_-]+")
ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?\Z")
LEAD_MODES = ("upsert", "existing")
SCALAR = (str, int, float, bool)

# marshmallow's stock messages, in the words of a mapping file.
_FRIENDLY = {
    "Missing data for required field.": "required key is missing",
    "Field may not be null.": "must not be empty",
    "Not a valid string.": "must be text",
    "Not a valid integer.": "must be a whole number",
    "Not a valid list.": "must be a list",
    "Not a valid URL.": "must be an http:// or https:// URL",
    "Invalid input type.": "must be a mapping of key: value",
}
_REQUIRED_HINTS = {
    "verify": "write `verify: none` to accept unsigned posts, or name a signature scheme",
    "rules": "a mapping needs at least one rule",
    "name": "give every rule a unique name",
    "cmd": "name the Kartra command, e.g. `cmd: assign_tag`",
}


class Hinted(str):
    """An error message that carries a hint; a `str`, so marshmallow stores it as one."""

    hint: str

    def __new__(cls, message: str, hint: str = "") -> Hinted:
        obj = super().__new__(cls, message)
        obj.hint = hint
        return obj


def _is_scalar(value: Any) -> bool:
    return isinstance(value, SCALAR)


class Scalar(fields.Field):
    """Text, a number or true/false: what a lead field or an action parameter can hold."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not _is_scalar(value):
            raise ValidationError("must be text, a number or true/false")
        return value


class Condition(fields.Field):
    """An expression as text, or true/false: a rule or action always, or never, taken
    (`when: false` switches a rule off without deleting it)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, str | bool):
            raise ValidationError("must be an expression (text) or true/false")
        return value


class CustomFields(fields.Field):
    """`identifier: value`; a value may be a list (the option ids of a checkbox field)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, dict):
            raise ValidationError("must be a mapping of field identifier: value")
        errors: dict[str, list[str]] = {}
        for key, item in value.items():
            if not isinstance(key, str) or not FIELD_IDENTIFIER.fullmatch(key):
                errors[str(key)] = ["a custom field identifier has only letters, digits, - and _"]
            elif not (_is_scalar(item) or (isinstance(item, list) and all(map(_is_scalar, item)))):
                errors[key] = ["must be text, a number or a list of option ids"]
        if errors:
            raise ValidationError(errors)
        return value


class Tables(fields.Field):
    """`name: {key: value}` lookup tables; keys are text or whole numbers."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, dict):
            raise ValidationError("must be a mapping of table name: {key: value}")
        errors: dict[str, Any] = {}
        for name, table in value.items():
            if not isinstance(name, str) or not TABLE_NAME.fullmatch(name):
                errors[str(name)] = [
                    "a table name has only letters, digits and _, and starts with a letter or _"
                ]
            elif not isinstance(table, dict):
                errors[name] = ["must be a mapping of key: value"]
            else:
                bad = {
                    str(key): ["must be text, a number or true/false"]
                    for key, item in table.items()
                    if not _is_scalar(item)
                }
                bad |= {
                    str(key): ["a key must be text or a whole number"]
                    for key in table
                    if not isinstance(key, str | int) or isinstance(key, bool)
                }
                if bad:
                    errors[name] = bad
        if errors:
            raise ValidationError(errors)
        return value


class Verify(fields.Field):
    """`none`, or `{scheme: <name>, ...}` checked per scheme (relay/mapping/verify.py)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        errors: dict[str, list[str]] = {}
        for path, message, hint in check_verify(value):
            errors.setdefault(path or "_schema", []).append(Hinted(message, hint))
        if errors:
            raise ValidationError(errors)
        return value


class _Strict(Schema):
    """Refuses keys it does not declare, naming the closest declared one."""

    class Meta:
        unknown = EXCLUDE

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _unknown_keys(self, data: Any, original_data: Any, **kwargs: Any) -> None:
        if not isinstance(original_data, dict):
            return
        known = {field.data_key or name for name, field in self.fields.items()}
        errors = {
            str(key): [Hinted("unknown key", did_you_mean(str(key), known))]
            for key in original_data
            if key not in known
        }
        if errors:
            raise ValidationError(errors)


class ResponseSchema(_Strict):
    status = fields.Integer(
        strict=True, validate=validate.OneOf([200, 202], error="must be 200 or 202")
    )
    redirect = fields.Url(schemes={"http", "https"}, require_tld=False)
    error_redirect = fields.Url(schemes={"http", "https"}, require_tld=False)


class FormSchema(_Strict):
    """Settings for a route that browsers post to (an HTML form or a `fetch()` call)."""

    origins = fields.List(
        fields.String(
            validate=validate.Regexp(
                ORIGIN, error="must be an origin like https://www.example.com (no path)"
            )
        )
    )
    rate_limit = fields.Integer(
        strict=True, validate=validate.Range(1, 10_000, error="must be 1 to 10000 posts a minute")
    )
    trust_forwarded_for = fields.Boolean(
        truthy={True}, falsy={False}, error_messages={"invalid": "must be true or false"}
    )


LeadSchema = _Strict.from_dict(
    {
        "mode": fields.String(
            validate=validate.OneOf(LEAD_MODES, error="must be upsert or existing")
        ),
        **{name: Scalar() for name in LEAD_FIELDS},
        "custom_fields": CustomFields(),
    },
    name="LeadSchema",
)


class ActionSchema(Schema):
    """`{cmd: <name>, <param>: value..., when: <expression>}`, checked against ACTIONS."""

    class Meta:
        unknown = INCLUDE

    cmd = fields.String(required=True)
    when = Condition()

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _params(self, data: Any, original_data: Any, **kwargs: Any) -> None:
        if not isinstance(original_data, dict) or not isinstance(original_data.get("cmd"), str):
            return
        cmd = original_data["cmd"]
        command = ACTIONS.get(cmd)
        if command is None:
            hint = did_you_mean(cmd, ACTIONS) or (
                "the relay sends lead commands itself: use the rule's `lead:`"
                if cmd in LEAD_COMMANDS
                else "see docs/mappings.md for the commands a mapping can use"
            )
            raise ValidationError({"cmd": [Hinted(f"unknown Kartra command {cmd!r}", hint)]})
        params = {key: v for key, v in original_data.items() if key not in ("cmd", "when")}
        errors: dict[str, list[str]] = {}
        for key, value in params.items():
            if key not in command.params:
                takes = ", ".join(command.params) or "no parameters"
                nested = [p for p in command.params if p.startswith(f"{key}[")]
                hint = (
                    f"Kartra takes it as {' and '.join(nested)}"
                    if nested
                    else did_you_mean(str(key), command.params) or f"it takes {takes}"
                )
                errors[str(key)] = [Hinted(f"{cmd} does not take {key!r}", hint)]
            elif value is None:
                errors[key] = ["must not be empty"]
            elif not _is_scalar(value):
                errors[key] = ["must be text, a number or true/false"]
        missing = [name for name in command.required if name not in params]
        chosen = [name for name in command.optional if name in params]
        fixed = [name for name in chosen if _written(params[name])]  # templates: at render
        if missing:
            errors["_schema"] = [f"{cmd} needs {' and '.join(missing)}"]
        elif command.optional_needed and not chosen:
            errors["_schema"] = [f"{cmd} needs {' or '.join(command.optional)}"]
        elif command.optional_needed == "one" and len(fixed) > 1:
            errors["_schema"] = [f"{cmd} takes only one of {' and '.join(fixed)}"]
        for param, allowed in command.choices:
            value = params.get(param)
            if _written(value) and str(value) not in allowed and param not in errors:
                errors[param] = [f"must be one of {', '.join(allowed)}"]
        if errors:
            raise ValidationError(errors)


def _written(value: Any) -> bool:
    """A value the file gives as it is, not a template rendered per event."""
    return value is not None and not (
        isinstance(value, str) and any(m in value for m in JINJA_MARKERS)
    )


class RuleSchema(_Strict):
    name = fields.String(
        required=True, validate=validate.Length(1, 100, error="must be 1 to 100 characters")
    )
    when = Condition()
    account = fields.String(
        validate=validate.Regexp(
            ACCOUNT_NAME, error="must be 1 to 64 lower-case letters, digits and _"
        )
    )
    lead = fields.Nested(LeadSchema)
    actions = fields.List(fields.Nested(ActionSchema))
    remember = fields.String()

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _lead_scope(self, data: Any, original_data: Any, **kwargs: Any) -> None:
        if not isinstance(original_data, dict):
            return
        lead = original_data.get("lead")
        actions = original_data.get("actions")
        actions = actions if isinstance(actions, list) else []
        errors: dict[Any, Any] = {}
        if isinstance(lead, dict):
            if "email" not in lead and "id" not in lead:
                message = Hinted("needs email or id", "Kartra finds a lead by one of them")
                errors["lead"] = {"_schema": [message]}
            elif lead.get("mode") == "existing" and not actions:
                message = Hinted(
                    "`existing` does nothing without actions",
                    "add actions, or use upsert to update the profile",
                )
                errors["lead"] = {"mode": [message]}
        elif lead is None:
            scoped = {
                i: {"_schema": [_no_lead(a["cmd"])]}
                for i, a in enumerate(actions)
                if isinstance(a, dict) and a.get("cmd") in ACTIONS and ACTIONS[a["cmd"]].needs_lead
            }
            if scoped:
                errors["actions"] = scoped
        if errors:
            raise ValidationError(errors)


def _no_lead(cmd: str) -> Hinted:
    return Hinted(
        f"{cmd} acts on a lead, but the rule has no `lead:`", "add a lead with email or id"
    )


class MappingSchema(_Strict):
    description = fields.String()
    verify = Verify(required=True)
    response = fields.Nested(ResponseSchema)
    form = fields.Nested(FormSchema)
    event_id = fields.String()
    account = fields.String(
        validate=validate.Regexp(
            ACCOUNT_NAME, error="must be 1 to 64 lower-case letters, digits and _"
        )
    )
    tables = Tables()
    rules = fields.List(
        fields.Nested(RuleSchema),
        required=True,
        validate=validate.Length(min=1, error="needs at least one rule"),
    )


def check_shape(data: Any, file: str) -> list[Problem]:
    """Every shape problem in a parsed mapping file, in file order."""
    if not isinstance(data, dict):
        return [
            Problem(
                file,
                "",
                "a mapping file is a YAML mapping (key: value) at the top",
                "start with `verify: none`",
            )
        ]
    try:
        MappingSchema().load(data)
    except ValidationError as exc:
        return list(_problems(exc.messages, file, ""))
    return []


def _problems(messages: Any, file: str, path: str):
    if isinstance(messages, dict):
        for key, value in messages.items():
            yield from _problems(value, file, path if key == "_schema" else _join(path, key))
        return
    for message in messages if isinstance(messages, list) else [messages]:
        text = _FRIENDLY.get(str(message), str(message))
        hint = getattr(message, "hint", "")
        if text == "required key is missing":
            hint = _REQUIRED_HINTS.get(path.rsplit(".", 1)[-1], "")
        yield Problem(file, path, text, hint)


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def in_file_order(problems: list[Problem], data: Any) -> list[Problem]:
    """`problems` sorted the way their keys appear in the file (a missing key: by its parent)."""
    order: dict[str, int] = {}

    def walk(node: Any, path: str) -> None:
        order.setdefault(path, len(order))
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, _join(path, key))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, _join(path, index))

    walk(data, "")

    def position(problem: Problem) -> int:
        path = problem.path
        while path not in order:
            path = path[: max(path.rfind("."), path.rfind("["), 0)]
        return order[path]

    return sorted(problems, key=position)
