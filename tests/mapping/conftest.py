"""Fixtures for the mapping engine: write a mapping file, load it, build payloads."""

import json
import textwrap
from pathlib import Path

import pytest

from relay.mapping import MappingError, load_mapping
from tests.conftest import FIXTURES, ROOT

MAPPINGS = ROOT / "mappings"
STRIPE = FIXTURES / "stripe"

RICH = """
description: Stripe checkout, refunds and cancellations
verify: {scheme: stripe, secret: "${STRIPE_WEBHOOK_SECRET}"}
response: {status: 202}
event_id: "{{ body.id }}"
account: shop_eu
tables:
  courses: {plink_1QFixtureCourse101: "Course 101", plink_B: "Course B"}
  levels: {"1": gold, "2": silver}
rules:
  - name: ignore-test-mode
    when: body.livemode is defined and not body.livemode and query.test is not defined
  - name: paid
    when: body.type == 'checkout.session.completed'
    lead:
      email: "{{ body.data.object.customer_details.email | email }}"
      first_name: "{{ body.data.object.customer_details.name | first_name }}"
      last_name: "{{ body.data.object.customer_details.name | last_name }}"
      phone: "{{ body.data.object.customer_details.phone | phone }}"
      city: "{{ body.data.object.customer_details.address.city }}"
      custom_fields:
        amount_paid: "{{ body.data.object.amount_total | cents }}"
        interests: "{{ body.data.object.metadata.interest_ids | default([]) }}"
        source: stripe
    actions:
      - cmd: assign_tag
        tag_name: "Bought {{ body.data.object.payment_link | lookup('courses') }}"
      - {cmd: assign_tag, tag_name: Member Access}
      - cmd: give_points_to_lead
        points: "{{ body.data.object.amount_total // 100 }}"
        when: body.data.object.amount_total > 0
      - {cmd: subscribe_lead_to_sequence_at_step, sequence_name: Onboarding, step: "1"}
  - name: refund
    when: body.type == 'charge.refunded'
    actions:
      - cmd: refund_transaction
        transaction_id: "{{ body.data.object.metadata.kartra_transaction_id }}"
        refund_amount: "{{ body.data.object.amount_refunded | cents }}"
  - name: cancelled
    when: body.type == 'customer.subscription.deleted'
    lead:
      mode: existing
      email: "{{ body.data.object.metadata.email | email }}"
    actions:
      - {cmd: unassign_tag, tag_name: Member Access}
      - {cmd: unsubscribe_lead_from_list, list_name: Customers}
"""


@pytest.fixture(autouse=True)
def stripe_secret(monkeypatch):
    """The secret RICH's `verify:` names; mapping files only ever name the variable."""
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_test_secret")


@pytest.fixture
def mapping_dir(tmp_path):
    """An empty mappings directory; `write` puts files in it."""
    directory = tmp_path / "mappings"
    directory.mkdir()
    return directory


@pytest.fixture
def write(mapping_dir):
    def write(name: str, text: str) -> Path:
        path = mapping_dir / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def load(write):
    """Write `text` as route `t` and load it."""

    def load(text: str, name: str = "t.yaml"):
        return load_mapping(write(name, text))

    return load


@pytest.fixture
def problems(write):
    """Write `text` as route `t`, expect it to fail, and return the problems as text."""

    def problems(text: str, name: str = "t.yaml") -> list[str]:
        path = write(name, text)
        with pytest.raises(MappingError) as caught:
            load_mapping(path)
        prefix = f"{path}: "
        return [str(p).removeprefix(prefix) for p in caught.value.problems]

    return problems


@pytest.fixture
def one_field(load):
    """A mapping whose one rule's lead is `email: a@b.c` plus `field: source`."""

    def one_field(field: str, source: str):
        lead = json.dumps({"email": "a@b.c", field: source})
        return load(f"verify: none\nrules: [{{name: r, lead: {lead}}}]\n")

    return one_field


@pytest.fixture
def demo():
    return load_mapping(MAPPINGS / "demo-form.yaml")


@pytest.fixture
def rich(load):
    return load(RICH, "shop.yaml")


@pytest.fixture
def event():
    """A render payload, the way ingest builds it."""

    def event(body=None, headers=None, query=None, route="t"):
        return {"body": body or {}, "headers": headers or {}, "query": query or {}, "route": route}

    return event
