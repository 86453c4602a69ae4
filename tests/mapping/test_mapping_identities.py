"""`remember` and `lead_email`: events that name only the sender's customer id."""

import pytest

from relay.mapping.filters import IDENTITIES
from relay.mapping.model import Identity

SHOP = """
verify: none
account: shop_eu
rules:
  - name: paid
    when: body.type == 'paid'
    remember: "{{ body.customer }}"
    lead:
      email: "{{ body.email | email }}"
    actions:
      - {cmd: assign_tag, tag_name: Customer}
  - name: cancelled
    when: body.type == 'cancelled'
    lead:
      mode: existing
      email: "{{ body.customer | lead_email }}"
    actions:
      - {cmd: assign_tag, tag_name: Cancelled}
"""


def payload(body, identities=None):
    payload = {"body": body, "headers": {}, "query": {}, "route": "t"}
    if identities is not None:
        payload[IDENTITIES] = identities
    return payload


def test_a_rule_remembers_its_customer_id_with_the_lead_email(load):
    rendered = load(SHOP).render(
        payload({"type": "paid", "customer": "cus_1", "email": "Jane@Example.com"})
    )
    assert rendered.status == "queued"
    assert rendered.identity == Identity("shop_eu", "cus_1", "jane@example.com")


def test_nothing_is_remembered_without_a_customer_id(load):
    rendered = load(SHOP).render(
        payload({"type": "paid", "customer": None, "email": "jane@example.com"})
    )
    assert rendered.status == "queued" and rendered.identity is None


def test_an_id_the_event_lacks_does_not_stop_the_delivery(load):
    rendered = load(SHOP.replace("body.customer }}", "body.customer.id }}", 1)).render(
        payload({"type": "paid", "customer": None, "email": "jane@example.com"})
    )
    assert rendered.status == "queued" and rendered.identity is None


def test_lead_email_asks_the_callers_lookup_for_the_rules_account(load):
    asked = []

    def identities(account, customer_id):
        asked.append((account, customer_id))
        return "jane@example.com"

    rendered = load(SHOP).render(payload({"type": "cancelled", "customer": "cus_1"}, identities))
    assert rendered.status == "queued"
    assert rendered.plans[0]["lead"] == {"email": "jane@example.com"}
    assert asked == [("shop_eu", "cus_1")]


def test_an_unknown_customer_rejects_naming_the_id(load):
    rendered = load(SHOP).render(
        payload({"type": "cancelled", "customer": "cus_9"}, lambda account, customer_id: None)
    )
    assert rendered.status == "rejected"
    assert rendered.reason.endswith("no lead identity for customer cus_9")
    assert rendered.awaiting == ("shop_eu", "cus_9")


def test_only_an_unknown_customer_leaves_the_event_awaiting(load):
    rendered = load(SHOP.replace("body.customer | lead_email", "body.nothing | lead_email")).render(
        payload({"type": "cancelled", "customer": "cus_9"}, lambda account, customer_id: None)
    )
    assert rendered.status == "rejected" and rendered.awaiting is None


@pytest.mark.parametrize("customer", ["", "  ", None])
def test_an_empty_customer_id_is_named_as_such(load, customer):
    rendered = load(SHOP).render(
        payload({"type": "cancelled", "customer": customer}, lambda account, customer_id: None)
    )
    assert rendered.status == "rejected"
    assert rendered.reason.endswith("lead_email: the customer id is empty")


def test_without_a_lookup_the_reason_is_the_same(load):
    rendered = load(SHOP).render(payload({"type": "cancelled", "customer": "cus_9"}))
    assert rendered.status == "rejected"
    assert rendered.reason.endswith("no lead identity for customer cus_9")


def test_a_payload_cannot_supply_the_lookup(load):
    body = {"type": "cancelled", "customer": "cus_9", IDENTITIES: "x", "identities": "x"}
    rendered = load(SHOP).render({**payload(body), "headers": {IDENTITIES: "x"}})
    assert rendered.status == "rejected"
    assert rendered.reason.endswith("no lead identity for customer cus_9")


def test_remember_must_be_text(problems):
    found = problems(SHOP.replace('remember: "{{ body.customer }}"', "remember: [1]"))
    assert any("remember" in problem for problem in found)
