"""Every shipped mapping (mappings/*.yaml and mappings/examples/*.yaml) over random events.

`Mapping.render` must never raise: each event ends queued, ignored or rejected, with a
reason for the last two. `Mapping.event_id` raises only `RenderError` (the one error
errors.py lets out of it). A queued plan must be storable as JSON and encodable as the
Kartra call it becomes. Events are either random bodies or a real sender fixture with
random subtrees swapped, dropped or retyped, so rules are reached deep and then fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.ingest.parse import parse_body
from relay.kartra.client import Credentials, build_params
from relay.kartra.form import encode
from relay.mapping import Mapping, RenderError, load_mapping
from relay.mapping.filters import IDENTITIES
from relay.mapping.model import MAX_REASON
from tests.conftest import FIXTURES, ROOT
from tests.fuzz.conftest import budget
from tests.ingest.senders import RECIPE_ENV, fixture, fixtures

FILES = sorted([*ROOT.glob("mappings/*.yaml"), *ROOT.glob("mappings/examples/*.yaml")])
CREDENTIALS = Credentials("app", "key", "password")


def _load(path: Path) -> Mapping:
    return load_mapping(path, RECIPE_ENV)


def _events(route: str) -> list[tuple[dict, dict]]:
    """The sender's fixtures as (body, lower-case headers), parsed as the relay parses them;
    for demo-form, its sample."""
    if route == "demo-form":
        sample = ROOT / "mappings" / "samples" / "demo-form.json"
        return [(json.loads(sample.read_text()), {})]
    events = []
    for sender, name in fixtures():
        if sender == route:
            raw, headers = fixture(sender, name)
            lowered = {k.lower(): v for k, v in headers.get("headers", headers).items()}
            events.append((parse_body(lowered.get("content-type"), raw), lowered))
    return events


MAPPINGS = {path: _load(path) for path in FILES}
EVENTS = {path: _events(mapping.route) for path, mapping in MAPPINGS.items()}

words = st.sampled_from(
    [
        "",
        " ",
        "a@b.co",
        "JANE@EXAMPLE.COM ",
        "{{ 7*7 }}",
        "{% for x in y %}",
        "x&api_key=1",
        "lead[id]=7",
        "0",
        "-1",
        "1.5",
        "null",
        "true",
        "cus_RFixtureMaria01",
        "checkout.session.completed",
        "charge.refunded",
        "order.success",
        "é🚀\0",
        "__class__",
    ]
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | words
)
keys = st.text(max_size=8) | words
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=3),
    max_leaves=12,
)


def _mutate(data, value, odds: int):
    """The fixture's value with, at each node, a 1-in-`odds` chance of being swapped for a
    random value, dropped (in a dict) or retyped; `odds` 0 keeps the fixture as it is."""

    def hit() -> bool:
        return odds > 0 and data.draw(st.integers(1, odds)) == 1

    if hit():
        return data.draw(values)
    if isinstance(value, dict):
        return {key: _mutate(data, item, odds) for key, item in value.items() if not hit()}
    if isinstance(value, list):
        return [_mutate(data, item, odds) for item in value]
    return data.draw(scalars) if hit() else value


def _identities(data):
    """The identity lookup `render` is given: knows every customer id, none, or some."""
    answer = data.draw(st.sampled_from(["buyer@example.com", None, "random"]))
    known = data.draw(st.dictionaries(st.text(max_size=6) | words, words, max_size=3))

    def find(account: str, customer_id: str) -> str | None:
        return known.get(customer_id) if answer == "random" else answer

    return find


def _check(mapping: Mapping, payload: dict) -> str:
    rendered = mapping.render(payload)
    assert rendered.status in ("queued", "ignored", "rejected")
    assert bool(rendered.plans) == (rendered.status == "queued")
    if rendered.status == "queued":
        assert rendered.reason is None
    else:
        assert isinstance(rendered.reason, str) and 0 < len(rendered.reason) <= MAX_REASON
    json.dumps(rendered.plans, allow_nan=False)
    for plan in rendered.plans:
        encode(build_params(CREDENTIALS, plan))
    try:
        event_id = mapping.event_id(payload)
    except RenderError:
        event_id = None
    assert event_id is None or (isinstance(event_id, str) and event_id.strip() == event_id)
    return rendered.status


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_shipped_mapping_has_fixtures_or_a_sample(path):
    """The fuzzer mutates real events: every mapping must have some to start from."""
    assert EVENTS[path], f"no fixture under {FIXTURES} for {path.stem}"


@settings(max_examples=budget(2.0))
@given(st.data())
def test_mutated_sender_events_never_escape_render(data):
    path = data.draw(st.sampled_from(FILES), label="mapping")
    odds = data.draw(st.sampled_from([0, 60, 20, 5]), label="odds")
    body, headers = data.draw(st.sampled_from(EVENTS[path]))
    body = _mutate(data, body, odds)
    body = body if isinstance(body, dict) else {"body": body}
    payload = {
        "body": body,
        "headers": {k: _mutate(data, v, odds) for k, v in headers.items()},
        "query": data.draw(st.dictionaries(keys, st.text(max_size=8) | words, max_size=2)),
        "route": MAPPINGS[path].route,
        IDENTITIES: _identities(data),
    }
    _check(MAPPINGS[path], payload)


@settings(max_examples=budget(1.0))
@given(st.data())
def test_random_bodies_never_escape_render(data):
    path = data.draw(st.sampled_from(FILES), label="mapping")
    body = data.draw(st.dictionaries(keys, values, max_size=6))
    payload = {"body": body, "headers": {}, "query": {}, "route": MAPPINGS[path].route}
    if data.draw(st.booleans()):
        payload[IDENTITIES] = _identities(data)
    _check(MAPPINGS[path], payload)
