"""Events that name only the sender's customer id, through `POST /hooks/<route>`: an
earlier event remembers the lead email, a later one finds it, an unknown id is rejected
with the id in the reason, and a replay after the identity is known queues the plan."""

import pytest

from relay.admin.operations import replay
from relay.config import Config
from relay.store.identities import find, remember
from relay.store.search import get_event
from relay.web import create_app

SHOP = """
verify: none
event_id: "{{ body.id }}"
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


@pytest.fixture
def app(tmp_path, engine):
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    (mappings / "shop.yaml").write_text(SHOP)
    return create_app(Config(database_url=str(engine.url), mappings_dir=mappings), engine)


@pytest.fixture
def client(app):
    return app.test_client()


def post(client, **body) -> dict:
    answer = client.post("/hooks/shop", json=body)
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


def test_the_first_event_remembers_and_the_second_finds_the_lead(client, engine):
    post(client, id="e1", type="paid", customer="cus_1", email="Jane@Example.com")
    assert find(engine, "shop", "default", "cus_1") == "jane@example.com"
    answer = post(client, id="e2", type="cancelled", customer="cus_1")
    assert answer["status"] == "queued"
    [delivery] = get_event(engine, answer["event_id"]).deliveries
    assert delivery.plan["lead"] == {"email": "jane@example.com"}


def test_an_unknown_customer_is_rejected_then_replayed_once_known(client, engine, app):
    answer = post(client, id="e1", type="cancelled", customer="cus_9")
    event = get_event(engine, answer["event_id"])
    assert event.status == "rejected"
    assert event.reason.endswith("no lead identity for customer cus_9")

    remember(engine, "shop", "default", "cus_9", "bob@example.com")
    requeued = replay(engine, app.extensions["relay"].mappings, answer["event_id"])
    assert requeued.status == "queued"
    [delivery] = get_event(engine, answer["event_id"]).deliveries
    assert delivery.plan["lead"] == {"email": "bob@example.com"}


def test_replaying_the_earlier_event_teaches_the_identity(client, engine, app):
    paid = post(client, id="e1", type="paid", customer="cus_1", email="jane@example.com")
    remember(engine, "shop", "default", "cus_1", "someone.else@example.com")
    replay(engine, app.extensions["relay"].mappings, paid["event_id"])
    assert find(engine, "shop", "default", "cus_1") == "jane@example.com"
