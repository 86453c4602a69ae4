"""Expressions evaluated directly (relay/mapping/direct.py) give what Jinja gives: the same
value of the same type, the same undefined, or the same exception with the same message,
on every recipe's expressions over its sender's fixtures and over random hostile bodies,
and on expressions written to probe the sandbox."""

import math
import random

import pytest
from jinja2 import Undefined
from jinja2.parser import Parser

from relay.ingest.parse import parse_body
from relay.mapping import load_mapping
from relay.mapping.direct import evaluator
from relay.mapping.expressions import VARIABLES, Sandbox, _single_expression
from tests.ingest.senders import EXAMPLES, RECIPE_ENV, fixture, fixtures
from tests.mapping.test_mapping_fuzz import checkout_like, random_value

TABLES = {"t": {"a@b.c": "found", "1": "one"}}
PROBES = [
    "body.email",
    "body.data.object.customer_details.email",
    "body.missing",
    "body.missing.deeper",
    "body['__class__']",
    "body.__class__",
    "body.items",
    "body['items']",
    "body.email.__class__.__base__",
    "body.email.upper",
    "body.list[0]",
    "body.list[-1]",
    "body.data[body.type]",
    "headers['content-type']",
    "query.test or 'none'",
    "body.vip and body.email",
    "not body.vip",
    "body.type == 'checkout.session.completed' and body.livemode != true",
    "body.amount < 3 < body.amount_total",
    "body.email in body.list",
    "body.email not in 'a@b.c, x@y.z'",
    "body.email is defined",
    "body.email is not defined and query.test is none",
    "body.email | email",
    "(body.email or body.name) | email | first_name",
    "body.email | lookup('t')",
    "body.id | lookup('t', 'fallback')",
    "body.id | lookup('t', default=body.email)",
    "body.email | default('x')",
    "body | length",
    "self",
    "self.__init__",
    "lipsum",
    "range",
    "route",
]


def both_ways(sandbox: Sandbox, source: str):
    node = Parser(sandbox.env, source, state="variable").parse_expression()
    jinja = sandbox.env.compile_expression(source, undefined_to_none=False)
    return evaluator(node, sandbox.env, VARIABLES), lambda variables: jinja(**variables)


def outcome(evaluate, variables):
    try:
        value = evaluate(variables)
    except Exception as exc:
        return ("raised", type(exc), str(exc))
    if isinstance(value, Undefined):
        return ("undefined", type(value), value._undefined_message)
    if isinstance(value, float) and math.isnan(value):
        return ("nan", float, "nan")
    return ("value", type(value), repr(value))


def assert_same(sandbox: Sandbox, source: str, bodies) -> bool:
    """Compare both ways on every body; False if the expression is Jinja's alone."""
    direct, jinja = both_ways(sandbox, source)
    if direct is None:
        return False
    for body in bodies:
        variables = {"body": body, "headers": {"content-type": "x"}, "query": {}, "route": "r"}
        assert outcome(direct, variables) == outcome(jinja, variables), (source, body)
    return True


def random_bodies(seed: int, count: int = 150) -> list:
    rng = random.Random(seed)
    bodies = []
    for _ in range(count):
        body = random_value(rng) if rng.random() < 0.5 else checkout_like(rng)
        bodies.append(body if isinstance(body, dict) else {"email": body, "list": body})
    return bodies


def expressions(mapping) -> list[str]:
    """Every `when` and every value of the file that is one `{{ expression }}`."""
    values = [mapping.event_id_template]
    conditions = []
    for rule in mapping.rules:
        conditions.append(rule.when)
        values.append(rule.remember)
        if rule.lead is not None:
            values += [v for _, v in rule.lead.fields + rule.lead.custom_fields]
        for action in rule.actions:
            conditions.append(action.when)
            values += [v for _, v in action.params]
    sources = [c.source for c in conditions if c is not None]
    for value in values:
        if value is not None and not value.literal:
            inner = _single_expression(value.source)
            sources += [inner] if inner is not None else []
    return sources


@pytest.mark.parametrize("sender", sorted({s for s, _ in fixtures()}))
def test_recipes_expressions_give_what_jinja_gives(sender):
    mapping = load_mapping(EXAMPLES / f"{sender}.yaml", RECIPE_ENV)
    sandbox = Sandbox(mapping.tables)
    bodies = random_bodies(seed=len(sender))
    for fixture_sender, name in fixtures():
        if fixture_sender == sender:
            raw, headers = fixture(sender, name)
            content_type = {k.lower(): v for k, v in headers.items()}["content-type"]
            bodies.append(parse_body(content_type, raw))
    for source in expressions(mapping):
        assert_same(sandbox, source, bodies)


def test_probes_give_what_jinja_gives():
    sandbox = Sandbox(TABLES)
    bodies = random_bodies(seed=7, count=400) + [
        {"email": "a@b.c", "list": ["a@b.c"], "vip": True, "amount": 1, "amount_total": 5},
        {"email": "Jane Doe", "id": 1, "data": {"x": {"y": 1}}, "type": "x"},
        {"email": None, "name": "Ann Lee", "items": [1]},
    ]
    direct = [source for source in PROBES if assert_same(sandbox, source, bodies)]
    left_to_jinja = {"self", "self.__init__", "lipsum", "range", "body.list[-1]"}  # -1: a negation
    assert set(PROBES) - set(direct) == left_to_jinja


def test_stripe_expressions_are_evaluated_directly_but_two():
    """The identity lookup, and invoice.paid's choice between the two shapes of an
    invoice line (a conditional expression)."""
    mapping = load_mapping(EXAMPLES / "stripe.yaml", RECIPE_ENV)
    sandbox = Sandbox(mapping.tables)
    left_to_jinja = [s for s in expressions(mapping) if both_ways(sandbox, s)[0] is None]
    assert [" ".join(s.split()) for s in left_to_jinja] == [
        "(body.data.object.lines.data[0].pricing.price_details.product"
        " if body.data.object.lines.data[0].pricing is defined"
        " else body.data.object.lines.data[0].price.product) | lookup('products')",
        "body.data.object.customer | lead_email",
    ]


@pytest.mark.parametrize(
    "source",
    [
        "body.a * 3",
        "body.a ** 2",
        "body.a ~ 'x'",
        "[body.a]",
        "body.a if body.b else 1",
        "body.a[1:]",
        "body.a | map('upper')",
        "body.a()",
        "body.a | join(',')",
    ],
)
def test_other_shapes_stay_with_jinja(source):
    assert both_ways(Sandbox({}), source)[0] is None


@pytest.mark.parametrize("source", ["query", "query.test", "headers['x'] or body.a", "route"])
def test_a_variable_not_passed_is_the_same_undefined(source):
    direct, jinja = both_ways(Sandbox({}), source)
    assert outcome(direct, {"body": {"a": 1}}) == outcome(jinja, {"body": {"a": 1}})
