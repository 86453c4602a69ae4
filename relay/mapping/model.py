"""A compiled mapping and how it turns one event into delivery plans.

Pure functions of the payload: no I/O, no clock, no randomness. `Mapping.render`
never raises for a bad event; it answers "queued", "ignored" or "rejected" with a
reason, so every event ends in a visible state.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relay.kartra.commands import ACTIONS
from relay.mapping.errors import RenderError, UnknownIdentity
from relay.mapping.expressions import Condition, Value, spelled_texts
from relay.mapping.filters import IDENTITIES

MAX_REASON = 1000
MAX_EMAIL = 254
"""The longest address SMTP can carry (RFC 5321: a 256-octet path, less its `<` `>`)."""
MAX_INT = 2**63  # Kartra (PHP) holds 64-bit integers; Python's str() stops at 4,300 digits
MAX_LEAD_ID = 64  # Kartra's lead ids are numbers; the size of the stored column
# One @ between a local part and a dotted domain, no space or control character: the
# shape every address Kartra takes has, checked so a form's typo is rejected with a
# reason here rather than failed by Kartra after a call. The local part has no empty
# dot-separated piece (`.jane`, `jane.`, `ja..ne`); the domain is host names, letters
# of any script, digits and inner hyphens, at least two (no `_`, no `[127.0.0.1]`, no
# trailing dot).
_LOCAL = r"[^@\s\x00-\x1f.]+(?:\.[^@\s\x00-\x1f.]+)*"
_LABEL = r"[^\W_](?:(?:[^\W_]|-)*[^\W_])?"
_EMAIL = re.compile(rf"{_LOCAL}@{_LABEL}(?:\.{_LABEL})+")


def is_email(text: str) -> bool:
    """Whether `text` has the shape of an email address, as a lead's must."""
    return len(text) <= MAX_EMAIL and _EMAIL.fullmatch(text) is not None


_NAME_KINDS = {"tag_name": "tags", "list_name": "lists", "sequence_name": "sequences"}


@dataclass(frozen=True)
class Action:
    cmd: str
    params: tuple[tuple[str, Value], ...]
    when: Condition | None = None


@dataclass(frozen=True)
class Lead:
    mode: str
    fields: tuple[tuple[str, Value], ...]
    custom_fields: tuple[tuple[str, Value], ...] = ()


@dataclass(frozen=True)
class Rule:
    name: str
    when: Condition | None
    lead: Lead | None
    actions: tuple[Action, ...]
    account: str | None = None
    """The Kartra account for this rule's plans; None means the mapping's."""
    remember: Value | None = None
    """The sender's customer id to remember with the lead's email, for later events
    that name only that id (`lead_email`)."""


@dataclass(frozen=True)
class Form:
    """A browser-facing route: CORS `origins`, posts a minute per client address, and
    whether `X-Forwarded-For` (set by a proxy you run behind, such as Heroku's router)
    names the client."""

    origins: tuple[str, ...] = ()
    rate_limit: int | None = None
    trust_forwarded_for: bool = False


@dataclass(frozen=True)
class Rendered:
    """What became of one event: "queued" with plans, "ignored" or "rejected" with a reason."""

    status: str
    rule: str | None
    reason: str | None
    plans: list[dict[str, Any]] = field(default_factory=list)
    identity: Identity | None = None
    awaiting: tuple[str, str] | None = None
    """(account, customer_id) when rejected for a customer id with no lead identity yet."""


@dataclass(frozen=True)
class Identity:
    """A sender's customer id and the lead email it stands for, in one Kartra account."""

    account: str
    customer_id: str
    email: str


@dataclass(frozen=True)
class Mapping:
    """One route's mapping file, validated and compiled."""

    route: str
    file: Path
    description: str
    verify: str | dict[str, Any]
    status_code: int
    redirect: str | None
    account: str
    rules: tuple[Rule, ...]
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    event_id_template: Value | None = None
    error_redirect: str | None = None
    form: Form | None = None

    def render(self, payload: dict[str, Any]) -> Rendered:
        """The plans for one event; the first rule whose `when` holds decides.

        `payload` is `{"body": dict, "headers": dict (lower-case names), "query": dict,
        "route": str}`, plus, from the caller only, `IDENTITIES`: a function
        `(account, customer_id) -> email or None` that the `lead_email` filter asks, so
        the mapping stays free of I/O. Never raises: anything a template does wrong
        rejects the event with a reason naming the rule and the key.
        """
        context = _context(payload, self.route)
        identities = payload.get(IDENTITIES)
        for rule in self.rules:
            account = rule.account or self.account
            context[IDENTITIES] = (
                None if identities is None else functools.partial(identities, account)
            )
            try:
                if rule.when is not None and not _at(rule, "when", rule.when, context):
                    continue
                plan = self._plan(rule, context)
            except RenderError as exc:
                unknown = _unknown_identity(exc)
                awaiting = None if unknown is None else (account, unknown.customer_id)
                return Rendered("rejected", rule.name, _cap(str(exc)), awaiting=awaiting)
            if plan is None:
                return Rendered("ignored", rule.name, f"rule {rule.name!r}: nothing to do")
            return Rendered("queued", rule.name, None, [plan], _identity(rule, plan, context))
        return Rendered("ignored", None, "no rule matched")

    def event_id(self, payload: dict[str, Any]) -> str | None:
        """The sender's event id (the de-duplication key), or None if the file names none.

        An empty result is None too. Raises RenderError when the template fails (the
        field is missing, say); the caller then de-duplicates on a hash of the raw body.
        """
        if self.event_id_template is None:
            return None
        value = self.event_id_template(_context(payload, self.route))
        if isinstance(value, bool) or not isinstance(value, str | int | float | type(None)):
            raise RenderError(f"event_id rendered a {type(value).__name__}, not text")
        if isinstance(value, int) and abs(value) >= MAX_INT:
            raise RenderError("event_id rendered a number too large to be an id")
        text = "" if value is None else str(value).strip()
        return text or None

    @property
    def accounts(self) -> set[str]:
        """Every Kartra account this mapping's rules deliver to."""
        return {rule.account or self.account for rule in self.rules}

    def names(self, account: str | None = None) -> dict[str, set[str]]:
        """The tag, list, sequence and custom-field names this mapping uses (in the rules
        that deliver to `account`, when given): those the file spells, as a literal, a
        quoted text in an expression, or a value of a table a `lookup` reads
        (`spelled_texts`). A name rendered from the payload can only be checked when an
        event arrives."""
        names: dict[str, set[str]] = {
            "tags": set(),
            "lists": set(),
            "sequences": set(),
            "custom_fields": set(),
        }
        for rule in self.rules:
            if account is not None and (rule.account or self.account) != account:
                continue
            if _switched_off(rule.when):
                continue
            if rule.lead is not None:
                names["custom_fields"].update(
                    identifier for identifier, _ in rule.lead.custom_fields
                )
            for action in (a for a in rule.actions if not _switched_off(a.when)):
                for param, value in action.params:
                    kind = _NAME_KINDS.get(param)
                    if kind is None or not isinstance(value.source, str):
                        continue
                    if value.literal:
                        names[kind].add(value.source)
                    else:
                        names[kind].update(spelled_texts(value.source, self.tables))
        return names

    def _plan(self, rule: Rule, context: dict[str, Any]) -> dict[str, Any] | None:
        lead = None if rule.lead is None else _lead(rule, context)
        actions = []
        for i, action in enumerate(rule.actions):
            if action.when is not None and not _at(
                rule, f"actions[{i}].when", action.when, context
            ):
                continue
            actions.append(_action(rule, i, action, context))
        if not actions and (lead is None or rule.lead.mode == "existing"):
            return None
        return {
            "rule": rule.name,
            "account": rule.account or self.account,
            "lead": lead,
            "lead_mode": None if rule.lead is None else rule.lead.mode,
            "actions": actions,
        }


def _switched_off(when: Condition | None) -> bool:
    """`when: false`: a rule or action kept in the file but never taken."""
    return when is not None and when.source.strip() == "false"


def _context(payload: dict[str, Any], route: str) -> dict[str, Any]:
    return {
        "body": payload.get("body", {}),
        "headers": payload.get("headers", {}),
        "query": payload.get("query", {}),
        "route": payload.get("route", route),
    }


def _identity(rule: Rule, plan: dict[str, Any], context: dict[str, Any]) -> Identity | None:
    """What `remember` asks to keep: only a lead with an email and a non-empty id. An id
    the event lacks is not an error: remembering must never stop a delivery."""
    email = (plan["lead"] or {}).get("email")
    if rule.remember is None or not email:
        return None
    try:
        customer_id = _scalar(rule, "remember", rule.remember, context)
    except RenderError:
        return None
    if _empty(customer_id) or isinstance(customer_id, bool):
        return None
    return Identity(plan["account"], str(customer_id).strip(), str(email))


def _lead(rule: Rule, context: dict[str, Any]) -> dict[str, Any]:
    lead: dict[str, Any] = {}
    for name, value in rule.lead.fields:
        rendered = _scalar(rule, f"lead.{name}", value, context)
        if not _empty(rendered):
            lead[name] = rendered
    custom_fields = []
    for identifier, value in rule.lead.custom_fields:
        path = f"lead.custom_fields.{identifier}"
        rendered = _at(rule, path, value, context)
        if isinstance(rendered, list | tuple):  # a checkbox field's option ids
            rendered = [_plain(rule, path, item) for item in rendered if not _empty(item)]
        else:
            rendered = _plain(rule, path, rendered)
        if not _empty(rendered):
            custom_fields.append({"field_identifier": identifier, "field_value": rendered})
    if custom_fields:
        lead["custom_fields"] = custom_fields
    if not (lead.get("email") or lead.get("id")):
        raise RenderError(f"rule {rule.name!r} rendered no lead email or id")
    if len(str(lead.get("email", ""))) > MAX_EMAIL:
        raise RenderError(
            f"rule {rule.name!r}: lead.email is {len(str(lead['email']))} characters long; "
            f"an email address has at most {MAX_EMAIL}"
        )
    if "email" in lead and not is_email(str(lead["email"])):
        raise RenderError(
            f"rule {rule.name!r}: lead.email {str(lead['email'])!r} is not an email address"
        )
    if len(str(lead.get("id", ""))) > MAX_LEAD_ID:
        raise RenderError(
            f"rule {rule.name!r}: lead.id is {len(str(lead['id']))} characters long; "
            f"a Kartra lead id has at most {MAX_LEAD_ID}"
        )
    return lead


def _action(rule: Rule, index: int, action: Action, context: dict[str, Any]) -> dict[str, Any]:
    command = ACTIONS[action.cmd]
    item: dict[str, Any] = {"cmd": action.cmd}
    for param, value in action.params:
        path = f"actions[{index}].{param}"
        rendered = _scalar(rule, path, value, context)
        if not _empty(rendered):
            item[param] = rendered
        elif param in command.required:
            raise RenderError(f"rule {rule.name!r}: {path} rendered empty")
    chosen = [param for param in command.optional if param in item]
    if command.optional_needed and not chosen:
        needs = " or ".join(command.optional)
        raise RenderError(f"rule {rule.name!r}: actions[{index}] rendered none of {needs}")
    if command.optional_needed == "one" and len(chosen) > 1:
        both = " and ".join(chosen)
        raise RenderError(f"rule {rule.name!r}: actions[{index}] rendered {both}; send one")
    for param, allowed in command.choices:
        if param in item and str(item[param]) not in allowed:
            raise RenderError(
                f"rule {rule.name!r}: actions[{index}].{param} rendered {item[param]!r}, "
                f"not one of {', '.join(allowed)}"
            )
    return item


def _unknown_identity(exc: BaseException | None) -> UnknownIdentity | None:
    """The UnknownIdentity behind a rejection: `_at` wraps it with the rule and key."""
    while exc is not None and not isinstance(exc, UnknownIdentity):
        exc = exc.__cause__
    return exc


def _at(rule: Rule, path: str, compiled: Value | Condition, context: dict[str, Any]) -> Any:
    try:
        return compiled(context)
    except RenderError as exc:
        raise RenderError(f"rule {rule.name!r}: {path}: {exc}") from exc


def _scalar(rule: Rule, path: str, value: Value, context: dict[str, Any]) -> Any:
    return _plain(rule, path, _at(rule, path, value, context))


def _plain(rule: Rule, path: str, value: Any) -> str | int | float | bool | None:
    """A JSON scalar: Markup and other str subclasses become plain str, and so on."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int) and abs(value) < MAX_INT:
        return int(value)
    if isinstance(value, float) and math.isfinite(value):
        return float(value)
    numeric = isinstance(value, float | int)
    what = "a number Kartra cannot hold" if numeric else f"a {type(value).__name__}"
    raise RenderError(f"rule {rule.name!r}: {path} rendered {what}, not a single value")


def _empty(value: Any) -> bool:
    return value is None or value == [] or (isinstance(value, str) and not value.strip())


def _cap(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 3] + "..."
