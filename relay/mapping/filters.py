"""The filters for the chores every mapping meets, on top of Jinja's built-ins.

Each filter is strict about its input: text (or a number) in, text out. A missing
payload field reaches a filter as `StrictUndefined`, and turning it into text raises
the usual "has no attribute" error, so `body.email | email` on a body without
`email` rejects the event instead of sending an empty address.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import Undefined, pass_context, pass_environment
from jinja2.filters import make_attrgetter
from jinja2.runtime import Context

from relay.mapping.errors import RenderError, UnknownIdentity

IDENTITIES = "relay.identities"
"""Where the caller of `Mapping.render` puts the identity lookup: no template can name
it (it is not an identifier) and no payload can fill it (JSON holds no functions)."""

_MISSING = object()
_WHOLE_NUMBER = re.compile(r"-?\d+")


def _text(value: Any, filter_name: str) -> str:
    if isinstance(value, Undefined):
        return str(value)  # StrictUndefined raises UndefinedError naming the missing field
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise RenderError(f"{filter_name} expects text, got {type(value).__name__}")


def email(value: Any) -> str:
    """Trimmed and lower-cased, so `Jane@Example.COM ` and `jane@example.com` are one lead."""
    return _text(value, "email").strip().lower()


def first_name(value: Any) -> str:
    """The first word of a full name: "Jane van der Berg" -> "Jane"."""
    words = _text(value, "first_name").split()
    return words[0] if words else ""


def last_name(value: Any) -> str:
    """Everything after the first word: "Jane van der Berg" -> "van der Berg"."""
    return " ".join(_text(value, "last_name").split()[1:])


def phone(value: Any) -> str:
    """Digits only, keeping a leading "+": "+1 (555) 555-0110" -> "+15555550110". An
    extension ("ext 12", "x12", "#12") is left out: Kartra's phone field holds a number,
    and its digits would make another one."""
    text = _EXTENSION.split(_text(value, "phone").strip(), maxsplit=1)[0].strip()
    digits = "".join(c for c in text if c in "0123456789")
    return ("+" if text.startswith("+") and digits else "") + digits


_EXTENSION = re.compile(r"(?<![a-z])(?:ext(?:ension)?\.?|x|#)\s*\d", re.IGNORECASE)


def cents(value: Any) -> str:
    """Integer minor units as a decimal string: 4900 -> "49.00", -5 -> "-0.05".

    Refuses anything that is not a whole number, None included: an amount that
    silently became "" would turn a partial refund into a full one.
    """
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined raises UndefinedError naming the missing field
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and _WHOLE_NUMBER.fullmatch(value.strip()):
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool):
        raise RenderError(f"cents expects a whole number of minor units, got {value!r}")
    sign = "-" if value < 0 else ""
    units, minor = divmod(abs(value), 100)
    return f"{sign}{units}.{minor:02d}"


@pass_context
def lead_email(context: Context, value: Any) -> str:
    """The lead email remembered for a sender's customer id (see `remember`).

    Unknown ids reject the event rather than render an empty lead: once the identity
    is known (an earlier event replayed, or `relay identities set`), a replay delivers it.
    """
    customer_id = _text(value, "lead_email").strip()
    if not customer_id:
        raise RenderError("lead_email: the customer id is empty")
    find = context.get(IDENTITIES)
    found = find(customer_id) if find is not None else None
    if not found:
        raise UnknownIdentity(customer_id)
    return found


def make_lookup(tables: Mapping[str, Mapping[str, Any]]) -> Callable[..., Any]:
    """The `lookup(table, default)` filter over one mapping file's `tables`.

    Keys are compared as text, so a payload's `1001` finds the table's `"1001"`.
    Without a default a missing key rejects the event: a product nobody mapped
    should be seen, not delivered without its tag.
    """

    def lookup(value: Any, table: str, default: Any = _MISSING) -> Any:
        if table not in tables:
            raise RenderError(f"lookup: no table {table!r} in this mapping file")
        key = _text(value, "lookup")
        if key in tables[table]:
            return tables[table][key]
        if default is _MISSING:
            raise RenderError(f"lookup: {key!r} is not in table {table!r}")
        return default

    return lookup


def as_list(value: Any) -> list[Any]:
    """The value's items as a list: a form sends one ticked checkbox as text and several
    as a list, and a checkbox custom field takes a list either way. Null or "" is []."""
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


@pass_environment
def join(environment: Any, value: Any, d: str = "", attribute: str | int | None = None) -> str:
    """Jinja's `join`, leaving JSON nulls out: Jinja's own prints each as "None", which
    would reach Kartra as a name or a field's text (`[body.first, body.last] | join(' ')`
    with no first name gave "None Doe")."""
    if attribute is not None:
        value = map(make_attrgetter(environment, attribute), value)
    separator = "" if d is None else str(d)  # a separator read from a null field
    return separator.join(str(item) for item in value if item is not None)


FILTERS: dict[str, Callable[..., Any]] = {
    "email": email,
    "first_name": first_name,
    "last_name": last_name,
    "phone": phone,
    "cents": cents,
    "as_list": as_list,
    "join": join,
    "lead_email": lead_email,
}
