"""An event waiting for a customer's lead identity, as the API, the dashboard and the
CLI show it, until the identity is learned."""

import pytest

from relay.admin.resume import Resume
from relay.store.identities import remember
from tests.admin.conftest import SHOP, TOKEN
from tests.admin.test_dashboard import sign_in
from tests.ingest.test_identities import SHOP as SUBSCRIPTIONS  # paid / cancelled


@pytest.fixture
def mappings_dir(tmp_path):
    directory = tmp_path / "mappings"
    directory.mkdir()
    (directory / "shop.yaml").write_text(SHOP)
    (directory / "subs.yaml").write_text(SUBSCRIPTIONS)
    return directory


def test_a_waiting_event_says_for_whom_until_it_goes_out(client, app, engine, cli):
    answer = client.post(
        "/hooks/subs", json={"id": "c1", "type": "cancelled", "customer": "cus_9"}
    ).get_json()
    event_id = answer["event_id"]
    api = client.get(f"/api/events/{event_id}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert (api.get_json()["status"], api.get_json()["awaiting_customer"]) == ("rejected", "cus_9")
    page = sign_in(app.test_client()).get(f"/admin/events/{event_id}").get_data(as_text=True)
    assert "Waiting for" in page and "customer cus_9" in page
    assert "waiting for the lead email of customer cus_9" in cli("show", event_id).output

    remember(engine, "subs", "default", "cus_9", "jane@example.com")
    assert Resume(engine, lambda: app.extensions["relay"].mappings).once() == 1
    api = client.get(f"/api/events/{event_id}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert (api.get_json()["status"], api.get_json()["awaiting_customer"]) == ("queued", None)
    page = sign_in(app.test_client()).get(f"/admin/events/{event_id}").get_data(as_text=True)
    assert "Waiting for" not in page
    assert "waiting for" not in cli("show", event_id).output
