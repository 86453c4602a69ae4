"""`python -m relay identities` and `PUT /api/identities`: an operator names the lead
behind a customer id, and the event that was waiting for it is replayed and delivered
to (the fake) Kartra."""

import json

from relay.mapping import load_mappings
from relay.store.search import get_event
from tests.admin.conftest import TOKEN, deliver

CANCEL = """
verify: none
event_id: "{{ body.id }}"
rules:
  - name: cancelled
    when: body.type == 'cancelled'
    lead:
      email: "{{ body.customer | lead_email }}"
    actions:
      - {cmd: assign_tag, tag_name: Customer}
"""


def cancellation_of_an_unknown_customer(client, app, mappings_dir):
    """Serve the cancel route and post a cancellation for cus_7, whom nobody knows yet."""
    (mappings_dir / "cancel.yaml").write_text(CANCEL)
    relay = app.extensions["relay"]
    relay.mappings = load_mappings(mappings_dir)
    answer = client.post(
        "/hooks/cancel", json={"id": "c1", "type": "cancelled", "customer": "cus_7"}
    )
    return relay, answer.get_json()["event_id"]


def test_set_an_identity_then_replay_delivers(cli, client, app, mappings_dir, fake):
    relay, event_id = cancellation_of_an_unknown_customer(client, app, mappings_dir)
    assert "no lead identity for customer cus_7" in cli("show", event_id).output

    out = cli("identities", "set", "cancel", "cus_7", " Jane@Example.com ").output
    assert out.strip() == "cancel default cus_7: jane@example.com"
    assert f"{event_id}: queued, 1 delivery" in cli("replay", event_id).output
    deliver(app)
    assert get_event(relay.engine, event_id).status == "delivered"
    assert [lead.tags for lead in fake.leads.values()] == [{"Customer"}]


def test_list_identities(cli):
    cli("identities", "set", "shop", "cus_1", "a@example.com")
    cli("identities", "set", "shop", "cus_2", "b@example.com")
    listed = cli("identities").output
    assert "shop default cus_1: a@example.com" in listed
    assert "shop default cus_2: b@example.com" in listed
    document = json.loads(cli("identities", "--json").output)
    assert [(i["account"], i["customer_id"], i["email"]) for i in document["identities"]] == [
        ("default", "cus_1", "a@example.com"),
        ("default", "cus_2", "b@example.com"),
    ]


def test_set_refuses_what_is_not_an_email(cli):
    for address in ("nobody", "jane doe@example.com", "a@", "@@", "jane@example..com"):
        refused = cli("identities", "set", "shop", "cus_1", address, code=2).output
        assert "is not an email address" in refused
    too_long = cli("identities", "set", "shop", "c" * 201, "a@example.com", code=2).output
    assert "1 to 200 characters" in too_long
    assert "0 identity(ies)" in cli("identities").output


def test_set_refuses_an_unknown_route_or_account(cli, client, app):
    """A typo would leave the events waiting for the customer waiting, with no word."""
    unknown_route = cli("identities", "set", "shpo", "cus_1", "a@example.com", code=1).output
    assert "no route 'shpo'" in unknown_route
    unknown_account = cli(
        "identities", "set", "shop", "cus_1", "a@example.com", "--account", "shop_eu", code=1
    ).output
    assert "unknown account 'shop_eu'" in unknown_account
    auth = {"Authorization": f"Bearer {TOKEN}"}
    given = {"route": "shpo", "customer_id": "cus_1", "email": "a@example.com"}
    refused = client.put("/api/identities", headers=auth, json=given)
    assert refused.status_code == 404 and refused.get_json() == {"error": "no route 'shpo'"}
    given = {**given, "route": "shop", "account": "shop_eu"}
    refused = client.put("/api/identities", headers=auth, json=given)
    assert refused.status_code == 404 and refused.get_json() == {"error": "no account 'shop_eu'"}
    assert "0 identity(ies)" in cli("identities").output


def test_set_an_identity_through_the_api_then_replay_delivers(client, app, mappings_dir, fake):
    relay, event_id = cancellation_of_an_unknown_customer(client, app, mappings_dir)
    auth = {"Authorization": f"Bearer {TOKEN}"}

    refused = client.put(
        "/api/identities", headers=auth, json={"route": "cancel", "customer_id": "cus_7"}
    )
    assert refused.status_code == 400 and "email" in refused.get_json()["error"]
    given = {"route": "cancel", "customer_id": " cus_7 ", "email": "Jane@Example.com"}
    stored = client.put("/api/identities", headers=auth, json=given).get_json()
    assert stored == {
        "route": "cancel",
        "account": "default",
        "customer_id": "cus_7",
        "email": "jane@example.com",
    }
    listed = client.get("/api/identities?route=cancel", headers=auth).get_json()
    assert [i["customer_id"] for i in listed["identities"]] == ["cus_7"]
    assert client.get("/api/identities?route=other", headers=auth).get_json() == {"identities": []}

    replayed = client.post(f"/api/events/{event_id}/replay", headers=auth, json={}).get_json()
    assert replayed["status"] == "queued"
    deliver(app)
    assert get_event(relay.engine, event_id).status == "delivered"
    assert [lead.tags for lead in fake.leads.values()] == [{"Customer"}]
