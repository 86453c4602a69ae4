"""Rendering events into plans: the demo form, rule order, ignore and reject paths."""

import json
from urllib.parse import parse_qs

import pytest

from relay.mapping import RenderError
from tests.conftest import FIXTURES

FORM = FIXTURES / "html-form"


def optin_body():
    """The urlencoded opt-in fixture, as the body parser hands it over."""
    with open(FORM / "optin.urlencoded.txt") as fh:
        fields = parse_qs(fh.read(), keep_blank_values=True)
    return {key: values[0] if len(values) == 1 else values for key, values in fields.items()}


def test_demo_renders_the_html_optin_fixture(demo, event):
    rendered = demo.render(event(optin_body(), route="demo-form"))
    assert rendered.status == "queued"
    assert (rendered.rule, rendered.reason) == ("signup", None)
    assert rendered.plans == [
        {
            "rule": "signup",
            "account": "default",
            "lead": {
                "email": "mia.anderson@example.com",
                "first_name": "Mia",
                "last_name": "Anderson",
                "phone": "+15555550110",
            },
            "lead_mode": "upsert",
            "actions": [
                {"cmd": "assign_tag", "tag_name": "Relay Demo"},
                {"cmd": "subscribe_lead_to_list", "list_name": "Relay Demo"},
            ],
        }
    ]


def test_demo_renders_a_json_post_with_only_an_email(demo, event):
    (plan,) = demo.render(event({"email": "  Jo@Example.COM "})).plans
    assert plan["lead"] == {"email": "jo@example.com"}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            {"first_name": "Mia"},
            "rule 'signup': lead.email: no field 'email' in the event",
        ),
        ({"email": "   "}, "rule 'signup' rendered no lead email or id"),
        ({"email": None}, "rule 'signup' rendered no lead email or id"),
        ({"email": ["a@b.c", "d@e.f"]}, "rule 'signup': lead.email: email expects text, got list"),
    ],
)
def test_demo_rejects_a_post_without_a_usable_email(demo, event, body, reason):
    rendered = demo.render(event(body))
    assert (rendered.status, rendered.rule, rendered.reason, rendered.plans) == (
        "rejected",
        "signup",
        reason,
        [],
    )


def stripe(name):
    with open(FIXTURES / "stripe" / f"{name}.json") as fh:
        return json.load(fh)


def test_rich_checkout_plan(rich, event):
    rendered = rich.render(event(stripe("checkout.session.completed"), query={"test": "1"}))
    assert rendered.status == "queued"
    (plan,) = rendered.plans
    assert plan == {
        "rule": "paid",
        "account": "shop_eu",
        "lead": {
            "email": "jane.doe@example.com",
            "first_name": "Jane",
            "last_name": "Doe",
            "phone": "+15555550123",
            "city": "San Francisco",
            "custom_fields": [
                {"field_identifier": "amount_paid", "field_value": "49.00"},
                {"field_identifier": "source", "field_value": "stripe"},
            ],
        },
        "lead_mode": "upsert",
        "actions": [
            {"cmd": "assign_tag", "tag_name": "Bought Course 101"},
            {"cmd": "assign_tag", "tag_name": "Member Access"},
            {"cmd": "give_points_to_lead", "points": 49},
            {
                "cmd": "subscribe_lead_to_sequence_at_step",
                "sequence_name": "Onboarding",
                "step": "1",
            },
        ],
    }
    assert json.loads(json.dumps(plan)) == plan


def test_first_matching_rule_wins_and_an_empty_rule_ignores(rich, event):
    rendered = rich.render(event(stripe("checkout.session.completed")))
    assert (rendered.status, rendered.rule) == ("ignored", "ignore-test-mode")
    assert rendered.reason == "rule 'ignore-test-mode': nothing to do"


def test_no_rule_matched(rich, event):
    rendered = rich.render(event({"type": "invoice.paid"}))
    assert (rendered.status, rendered.rule, rendered.reason) == ("ignored", None, "no rule matched")


def test_lead_less_command_and_missing_field_rejection(rich, event):
    body = stripe("charge.refunded")
    rendered = rich.render(event(body, query={"test": "1"}))
    assert rendered.status == "rejected"
    assert rendered.reason == (
        "rule 'refund': actions[0].transaction_id: no field 'kartra_transaction_id' in the event"
    )
    body["data"]["object"]["metadata"]["kartra_transaction_id"] = 7731
    (plan,) = rich.render(event(body, query={"test": "1"})).plans
    assert plan["lead"] is None and plan["lead_mode"] is None
    assert plan["actions"] == [
        {"cmd": "refund_transaction", "transaction_id": 7731, "refund_amount": "97.00"}
    ]


def test_existing_mode(rich, event):
    body = {
        "type": "customer.subscription.deleted",
        "data": {"object": {"metadata": {"email": "M@x.io"}}},
    }
    (plan,) = rich.render(event(body)).plans
    assert plan["lead_mode"] == "existing"
    assert plan["lead"] == {"email": "m@x.io"}


def test_native_types_survive(load, event):
    mapping = load(
        """
        verify: none
        rules:
          - name: r
            lead:
              email: a@b.c
              custom_fields:
                interests: "{{ body.ids }}"
                note: "ids: {{ body.ids }}"
                level: 3
            actions:
              - {cmd: give_points_to_lead, points: "{{ body.points }}", expiration: 30}
              - {cmd: give_points_to_lead, points: "{{ body.points * 2 }}"}
              - {cmd: give_points_to_lead, points: " {{ body.points }} "}
        """
    )
    (plan,) = mapping.render(event({"ids": [4, 7], "points": 10})).plans
    assert plan["lead"]["custom_fields"] == [
        {"field_identifier": "interests", "field_value": [4, 7]},
        {"field_identifier": "note", "field_value": "ids: [4, 7]"},
        {"field_identifier": "level", "field_value": 3},
    ]
    assert plan["actions"] == [
        {"cmd": "give_points_to_lead", "points": 10, "expiration": 30},
        {"cmd": "give_points_to_lead", "points": 20},
        {"cmd": "give_points_to_lead", "points": 10},
    ]


def test_action_when_drops_actions_and_optional_empties_are_omitted(load, event):
    mapping = load(
        """
        verify: none
        rules:
          - name: r
            lead:
              email: a@b.c
              first_name: "{{ body.name | default('') }}"
              city: "{{ body.city }}"
            actions:
              - {cmd: assign_tag, tag_name: VIP, when: "body.vip | default(false)"}
              - {cmd: give_points_to_lead, points: 1, expiration: "{{ body.days | default('') }}"}
        """
    )
    (plan,) = mapping.render(event({"city": None})).plans
    assert plan["lead"] == {"email": "a@b.c"}
    assert plan["actions"] == [{"cmd": "give_points_to_lead", "points": 1}]
    (plan,) = mapping.render(event({"vip": True, "days": 7, "city": "Oslo"})).plans
    assert plan["lead"]["city"] == "Oslo"
    assert [a["cmd"] for a in plan["actions"]] == ["assign_tag", "give_points_to_lead"]
    assert "when" not in plan["actions"][0]


def test_upsert_with_every_action_dropped_still_updates_the_lead(load, event):
    mapping = load(
        """
        verify: none
        rules:
          - name: r
            lead: {email: a@b.c}
            actions: [{cmd: assign_tag, tag_name: VIP, when: "false"}]
          - name: s
            lead: {email: a@b.c, mode: existing}
            actions: [{cmd: assign_tag, tag_name: VIP, when: "false"}]
        """
    )
    assert mapping.render(event({})).plans[0]["actions"] == []


@pytest.mark.parametrize(
    ("when", "body", "reason"),
    [
        ("body.vip", {}, "rule 'r': when: no field 'vip' in the event"),
        ("1 / body.n", {"n": 0}, "rule 'r': when: ZeroDivisionError: division by zero"),
        (
            "body.n + 'x'",
            {"n": 1},
            "rule 'r': when: TypeError: unsupported operand type(s) for +: 'int' and 'str'",
        ),
    ],
)
def test_errors_in_conditions_reject(load, event, when, body, reason):
    mapping = load(f"verify: none\nrules: [{{name: r, when: {json.dumps(when)}}}]\n")
    rendered = mapping.render(event(body))
    assert (rendered.status, rendered.reason) == ("rejected", reason)


def test_required_param_rendered_empty_rejects(load, event):
    mapping = load(
        """
        verify: none
        rules:
          - name: buy
            lead: {email: a@b.c}
            actions: [{cmd: assign_tag, tag_name: "{{ body.tag | default('') }}"}]
        """
    )
    assert mapping.render(event({})).reason == "rule 'buy': actions[0].tag_name rendered empty"


def test_one_of_params_rendered_empty_rejects(load, event):
    mapping = load(
        """
        verify: none
        rules:
          - name: cancel
            actions: [{cmd: cancel_transaction, transaction_id: "{{ body.id }}"}]
        """
    )
    assert mapping.render(event({"id": ""})).reason == (
        "rule 'cancel': actions[0] rendered none of transaction_id or "
        "transaction_internal_subscription_id"
    )


def test_subscription_values_kartra_would_refuse_reject(load, event):
    mapping = load(
        """
        verify: none
        rules:
          - name: change
            when: body.op | default('') == 'status'
            actions:
              - cmd: modify_subscription_status
                subscription_id: "{{ body.sub }}"
                subscription_status_modification: "{{ body.status }}"
          - name: cancel
            actions:
              - cmd: cancel_transaction
                transaction_id: "{{ body.tx | default('') }}"
                transaction_internal_subscription_id: "{{ body.sub | default('') }}"
        """
    )
    assert mapping.render(event({"op": "status", "sub": 1, "status": "pause"})).plans
    assert mapping.render(event({"op": "status", "sub": 1, "status": "stop"})).reason == (
        "rule 'change': actions[0].subscription_status_modification rendered 'stop', "
        "not one of cancel, pause, unpause"
    )
    assert mapping.render(event({"tx": 5})).plans
    assert mapping.render(event({"tx": 5, "sub": 9})).reason == (
        "rule 'cancel': actions[0] rendered transaction_id and "
        "transaction_internal_subscription_id; send one"
    )


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{{ body.x }}", "lead.first_name rendered a list, not a single value"),
        ("{{ body.x | map('upper') }}", "lead.first_name rendered a generator, not a single value"),
        ("{{ body.x.count }}", "lead.first_name rendered a builtin_function_or_method"),
        ("{{ body.big * 10 }}", "lead.first_name rendered a number Kartra cannot hold"),
        ("{{ body.huge * body.huge }}", "lead.first_name rendered a number Kartra cannot hold"),
        ("{{ 2 ** 63 }}", "lead.first_name rendered a number Kartra cannot hold"),
    ],
)
def test_values_that_are_not_json_scalars_reject(one_field, event, source, reason):
    mapping = one_field("first_name", source)
    rendered = mapping.render(event({"x": ["a"], "big": 1e308, "huge": 10**3000}))
    assert rendered.status == "rejected"
    assert rendered.reason.startswith(f"rule 'r': {reason}")


def test_markup_becomes_plain_str(one_field, event):
    mapping = one_field("first_name", "{{ body.n | forceescape }}")
    (plan,) = mapping.render(event({"n": "<b>"})).plans
    assert type(plan["lead"]["first_name"]) is str
    assert plan["lead"]["first_name"] == "&lt;b&gt;"


def test_payload_jinja_is_data_not_a_template(demo, event):
    body = {"email": "a@b.c", "first_name": "{{ 7*7 }}", "last_name": "{% for x in y %}"}
    (plan,) = demo.render(event(body)).plans
    assert plan["lead"]["first_name"] == "{{ 7*7 }}"
    assert plan["lead"]["last_name"] == "{% for x in y %}"


def test_null_inside_text_prints_empty(one_field, event):
    mapping = one_field("first_name", "{{ body.a }}-{{ body.b }}")
    (plan,) = mapping.render(event({"a": None, "b": "x"})).plans
    assert plan["lead"]["first_name"] == "-x"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ [body.a, body.b] | join(' ') }}", "Doe"),
        ("{{ [body.b, body.a, body.b] | join(', ') }}", "Doe, Doe"),
        ("{{ body.parts | join('/', attribute='n') }}", "1/x"),
        ("{{ [body.b, 7] | join }}", "Doe7"),
        ("{{ [body.b, body.b] | join(body.a) }}", "DoeDoe"),
    ],
)
def test_join_leaves_nulls_out(one_field, event, source, expected):
    mapping = one_field("first_name", source)
    body = {"a": None, "b": "Doe", "parts": [{"n": 1}, {"n": None}, {"n": "x"}]}
    (plan,) = mapping.render(event(body)).plans
    assert plan["lead"]["first_name"] == expected


def test_headers_query_and_route_are_in_context(load, event):
    mapping = load(
        """
        verify: none
        rules:
          - name: r
            when: headers['x-topic'] == 'orders/paid' and query.src == 'ads'
            lead: {email: a@b.c, website: "{{ route }}"}
        """
    )
    rendered = mapping.render(
        event(headers={"x-topic": "orders/paid"}, query={"src": "ads"}, route="t")
    )
    assert rendered.plans[0]["lead"]["website"] == "t"


def test_lookup_with_and_without_default(load, event):
    mapping = load(
        """
        verify: none
        tables: {products: {prod_A: Course A, 1001: Course B}}
        rules:
          - name: r
            lead: {email: a@b.c}
            actions:
              - {cmd: assign_tag, tag_name: "{{ body.p | lookup('products') }}"}
              - {cmd: assign_tag, tag_name: "{{ body.p | lookup('products', default='Other') }}"}
        """
    )
    (plan,) = mapping.render(event({"p": 1001})).plans
    assert [a["tag_name"] for a in plan["actions"]] == ["Course B", "Course B"]
    rendered = mapping.render(event({"p": "prod_C"}))
    assert (
        rendered.reason
        == "rule 'r': actions[0].tag_name: lookup: 'prod_C' is not in table 'products'"
    )


def test_lookup_table_named_by_the_payload_must_exist(load, event):
    mapping = load(
        """
        verify: none
        tables: {a: {x: y}}
        rules:
          - name: r
            lead: {email: a@b.c}
            actions: [{cmd: assign_tag, tag_name: "{{ 'x' | lookup(body.table) }}"}]
        """
    )
    assert mapping.render(event({"table": "a"})).status == "queued"
    assert mapping.render(event({"table": "b"})).reason == (
        "rule 'r': actions[0].tag_name: lookup: no table 'b' in this mapping file"
    )


def test_event_id(rich, demo, load, event):
    assert rich.event_id(event(stripe("charge.refunded"))) == "evt_3QFixtureRefund0001"
    assert demo.event_id(event({"email": "a@b.c"})) is None
    assert rich.event_id(event({"id": ""})) is None
    assert rich.event_id(event({"id": 42})) == "42"
    with pytest.raises(RenderError, match="no field 'id' in the event"):
        rich.event_id(event({}))
    with pytest.raises(RenderError, match="rendered a list"):
        rich.event_id(event({"id": [1]}))
    with pytest.raises(RenderError, match="a number too large to be an id"):
        rich.event_id(event({"id": 10**5000}))  # str() of it would raise ValueError


def test_names_are_those_the_file_spells(load):
    mapping = load(
        """
        verify: none
        tables: {products: {p1: Course A, p2: Course B}}
        rules:
          - name: r
            lead: {email: a@b.c}
            actions:
              - {cmd: assign_tag, tag_name: "{{ body.sku | lookup('products', 'Other') }}"}
              - {cmd: assign_tag, tag_name: "{{ 'Refunded' if body.refund else 'Paid' }}"}
              - {cmd: assign_tag, tag_name: "{{ body.tag or 'Fallback' }}"}
              - {cmd: assign_tag, tag_name: "Booked: {{ body.event }}"}
              - {cmd: assign_tag, tag_name: "Bought {{ body.sku | lookup('products') }}"}
              - {cmd: subscribe_lead_to_list, list_name: "{{ body.list }}"}
        """
    )
    assert mapping.names()["tags"] == {
        "Course A",
        "Course B",
        "Other",
        "Refunded",
        "Paid",
        "Fallback",
        "Bought Course A",
        "Bought Course B",
    }
    assert mapping.names()["lists"] == set()


def test_a_switched_off_rule_or_action_needs_nothing_in_kartra(load):
    mapping = load(
        """
        verify: none
        rules:
          - name: old
            when: false
            lead: {email: a@b.c, custom_fields: {legacy: x}}
            actions: [{cmd: assign_tag, tag_name: Gone}]
          - name: r
            lead: {email: a@b.c}
            actions:
              - {cmd: assign_tag, tag_name: Kept}
              - {cmd: assign_tag, tag_name: Paused, when: false}
        """
    )
    assert mapping.names() == {
        "tags": {"Kept"},
        "lists": set(),
        "sequences": set(),
        "custom_fields": set(),
    }


def test_names_lists_literal_names(rich, demo):
    assert rich.names() == {
        "tags": {"Member Access", "Bought Course 101", "Bought Course B"},  # and a table's
        "lists": {"Customers"},
        "sequences": {"Onboarding"},
        "custom_fields": {"amount_paid", "interests", "source"},
    }
    assert demo.names() == {
        "tags": {"Relay Demo"},
        "lists": {"Relay Demo"},
        "sequences": set(),
        "custom_fields": set(),
    }


def test_long_reasons_are_capped(load, event):
    mapping = load(
        """
        verify: none
        tables: {t: {a: b}}
        rules: [{name: r, lead: {email: a@b.c, city: "{{ body.k | lookup('t') }}"}}]
        """
    )
    reason = mapping.render(event({"k": "x" * 5000})).reason
    assert len(reason) == 1000 and reason.endswith("...")


def test_render_does_not_touch_the_payload(rich, event):
    payload = event(stripe("checkout.session.completed"), query={"test": "1"})
    before = json.dumps(payload, sort_keys=True)
    rich.render(payload)
    assert json.dumps(payload, sort_keys=True) == before


ACCOUNTS = """
verify: none
account: shop_us
rules:
  - name: eu
    when: body.region == 'eu'
    account: shop_eu
    lead: {email: "{{ body.email }}"}
    actions: [{cmd: assign_tag, tag_name: EU Buyer}]
  - name: us
    lead: {email: "{{ body.email }}"}
    actions: [{cmd: assign_tag, tag_name: US Buyer}]
"""


def test_a_rule_can_choose_its_own_account(load, event):
    mapping = load(ACCOUNTS)
    [eu] = mapping.render(event({"region": "eu", "email": "a@b.co"})).plans
    [us] = mapping.render(event({"region": "us", "email": "a@b.co"})).plans
    assert (eu["account"], us["account"]) == ("shop_eu", "shop_us")
    assert mapping.accounts == {"shop_eu", "shop_us"}
    assert mapping.names("shop_eu")["tags"] == {"EU Buyer"}
    assert mapping.names()["tags"] == {"EU Buyer", "US Buyer"}


def test_a_rule_account_must_be_a_valid_name(problems):
    found = problems(ACCOUNTS.replace("account: shop_eu", "account: Shop-EU"))
    assert any("rules[0].account" in p and "lower-case" in p for p in found)


@pytest.mark.parametrize(
    ("interests", "sent"),
    [("11", ["11"]), (["11", "12"], ["11", "12"]), (["", None, "3"], ["3"]), ("", None)],
)
def test_a_checkbox_field_gets_a_list_of_the_ticked_ids(load, event, interests, sent):
    """A form sends one ticked box as text, several as a list; empty ids are left out."""
    mapping = load(
        """
        verify: none
        rules:
          - name: r
            lead:
              email: a@b.co
              custom_fields: {interests: "{{ body.interests | as_list }}"}
        """
    )
    lead = mapping.render(event({"interests": interests})).plans[0]["lead"]
    fields = {f["field_identifier"]: f["field_value"] for f in lead.get("custom_fields", [])}
    assert fields.get("interests") == sent


def test_when_true_or_false_takes_a_rule_or_action_always_or_never(load, event):
    mapping = load(
        """
        verify: none
        rules:
          - {name: switched-off, when: false, lead: {email: off@b.c}}
          - name: always
            when: true
            lead: {email: on@b.c}
            actions:
              - {cmd: assign_tag, tag_name: Never, when: false}
              - {cmd: assign_tag, tag_name: Always, when: true}
        """
    )
    rendered = mapping.render(event({}))
    [plan] = rendered.plans
    assert (rendered.rule, plan["lead"]["email"]) == ("always", "on@b.c")
    assert plan["actions"] == [{"cmd": "assign_tag", "tag_name": "Always"}]


def test_when_of_another_kind_is_named(problems):
    found = problems("verify: none\nrules: [{name: r, when: 3, lead: {email: a@b.c}}]\n")
    assert found == ["rules[0].when: must be an expression (text) or true/false"]
