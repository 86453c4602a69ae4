"""Events that name only the sender's customer id, through `POST /hooks/<route>`: an
earlier event remembers the lead email, a later one finds it, an unknown id is rejected
with the id in the reason, and a replay after the identity is known queues the plan."""

from datetime import timedelta

import pytest
from sqlalchemy import text
from structlog.testing import capture_logs

from relay.admin.operations import Overtaken, replay, replay_many
from relay.admin.resume import Resume
from relay.cli import _mappings_when_needed
from relay.config import Config
from relay.store import migrate
from relay.store.identities import find, ready, remember, unsettled
from relay.store.maintenance import redact
from relay.store.search import get_event
from relay.store.tables import utcnow
from relay.web import create_app
from tests.conftest import downgrade

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


def resume(app, engine) -> Resume:
    return Resume(engine, lambda: app.extensions["relay"].mappings)


def test_an_event_waiting_for_a_customer_goes_out_once_an_event_teaches_it(client, engine, app):
    waiting = post(client, id="e1", type="cancelled", customer="cus_9")["event_id"]
    assert resume(app, engine).once() == 0
    post(client, id="e2", type="paid", customer="cus_9", email="bob@example.com")
    with capture_logs() as logs:
        assert resume(app, engine).once() == 1
    event = get_event(engine, waiting)
    assert (event.status, event.reason) == ("queued", None)
    [delivery] = event.deliveries
    assert delivery.plan["lead"] == {"email": "bob@example.com"}
    assert resume(app, engine).once() == 0
    [line] = [x for x in logs if x["event"] == "event_resumed"]
    assert (line["event_id"], line["customer_id"], line["deliveries"]) == (waiting, "cus_9", 1)


def test_an_identity_set_by_hand_resumes_the_event_too(client, engine, app):
    waiting = post(client, id="e1", type="cancelled", customer="cus_9")["event_id"]
    remember(engine, "shop", "other_account", "cus_9", "bob@example.com")
    remember(engine, "elsewhere", "default", "cus_9", "bob@example.com")
    assert resume(app, engine).once() == 0  # another account's or route's customer
    remember(engine, "shop", "default", "cus_9", "bob@example.com")
    assert resume(app, engine).once() == 1
    assert get_event(engine, waiting).status == "queued"


def test_of_two_processes_finding_an_event_ready_one_replays_it(client, engine, app):
    waiting = post(client, id="e1", type="cancelled", customer="cus_9")["event_id"]
    remember(engine, "shop", "default", "cus_9", "bob@example.com")
    [found] = ready(engine)
    assert found.event_id == waiting
    expect = {"awaiting_account": "default", "awaiting_customer": "cus_9"}
    mappings = app.extensions["relay"].mappings
    assert replay(engine, mappings, waiting, expect=expect).deliveries == 1
    with pytest.raises(Overtaken):
        replay(engine, mappings, waiting, expect=expect)
    assert len(get_event(engine, waiting).deliveries) == 1
    assert ready(engine) == []


def test_a_replay_by_status_leaves_out_what_the_resumer_sent_meanwhile(client, engine, app):
    waiting = post(client, id="e1", type="cancelled", customer="cus_9")["event_id"]
    chosen = [waiting]  # an operator's `relay replay --status rejected` chose it
    remember(engine, "shop", "default", "cus_9", "bob@example.com")
    assert resume(app, engine).once() == 1
    [result] = replay_many(engine, app.extensions["relay"].mappings, chosen, status="rejected")
    assert not result.ok and "changed since it was chosen" in result.error
    assert len(get_event(engine, waiting).deliveries) == 1


def test_and_the_resumer_leaves_out_what_a_replay_by_hand_sent(client, engine, app, monkeypatch):
    waiting = post(client, id="e1", type="cancelled", customer="cus_9")["event_id"]
    remember(engine, "shop", "default", "cus_9", "bob@example.com")
    looked = ready(engine)
    replay(engine, app.extensions["relay"].mappings, waiting)  # by hand, after the look
    monkeypatch.setattr("relay.admin.resume.ready", lambda engine: looked)
    assert resume(app, engine).once() == 0
    assert len(get_event(engine, waiting).deliveries) == 1


def test_a_failed_resume_leaves_the_event_waiting(client, engine, app, monkeypatch):
    waiting = post(client, id="e1", type="cancelled", customer="cus_9")["event_id"]
    remember(engine, "shop", "default", "cus_9", "bob@example.com")

    def broken(*args, **kwargs):
        raise RuntimeError("the process stopped here")

    monkeypatch.setattr("relay.store.maintenance.new_delivery", broken)
    with capture_logs() as logs:
        assert resume(app, engine).once() == 0
    assert [x["event"] for x in logs] == ["event_resume_failed"]
    assert get_event(engine, waiting).awaiting_customer == "cus_9"
    monkeypatch.undo()
    assert resume(app, engine).once() == 1
    assert get_event(engine, waiting).status == "queued"


def test_a_worker_without_the_routes_mapping_keeps_the_events_waiting(client, engine, app):
    waiting = post(client, id="e1", type="cancelled", customer="cus_9")["event_id"]
    post(client, id="e2", type="cancelled", customer="cus_9")
    remember(engine, "shop", "default", "cus_9", "bob@example.com")
    elsewhere = Resume(engine, dict)
    with capture_logs() as logs:
        assert elsewhere.once() == 0 and elsewhere.once() == 0
    assert [(x["event"], x["problem"]) for x in logs] == [
        ("resume_waits", "no mapping for route 'shop'")
    ]
    assert get_event(engine, waiting).awaiting_customer == "cus_9"


def test_mappings_that_do_not_load_are_told_once_and_the_events_wait(client, engine, app):
    waiting = post(client, id="e1", type="cancelled", customer="cus_9")["event_id"]
    remember(engine, "shop", "default", "cus_9", "bob@example.com")

    def unloadable():
        raise ValueError("environment variable SHOP_SECRET is not set")

    broken = Resume(engine, unloadable)
    with capture_logs() as logs:
        assert broken.once() == 0 and broken.once() == 0
    assert [(x["event"], x["error"]) for x in logs] == [
        ("resume_waits", "environment variable SHOP_SECRET is not set")
    ]
    assert resume(app, engine).once() == 1
    assert get_event(engine, waiting).status == "queued"


def test_a_redacted_event_waits_no_more(client, engine, app):
    waiting = post(client, id="e1", type="cancelled", customer="cus_9")["event_id"]
    redact(engine, event_ids=[waiting])
    assert get_event(engine, waiting).awaiting_customer is None
    remember(engine, "shop", "default", "cus_9", "bob@example.com")
    assert ready(engine) == [] and resume(app, engine).once() == 0


def test_a_replay_that_still_finds_no_identity_keeps_the_event_waiting(client, engine, app):
    waiting = post(client, id="e1", type="cancelled", customer="cus_9")["event_id"]
    replay(engine, app.extensions["relay"].mappings, waiting)
    remember(engine, "shop", "default", "cus_9", "bob@example.com")
    assert resume(app, engine).once() == 1
    assert get_event(engine, waiting).status == "queued"


def test_a_customer_id_too_long_to_be_learned_is_not_waited_for(client, engine, app):
    waiting = post(client, id="e1", type="cancelled", customer="c" * 201)["event_id"]
    assert get_event(engine, waiting).status == "rejected"
    assert ready(engine) == [] and resume(app, engine).once() == 0


def test_the_worker_loads_the_mappings_only_when_an_event_is_ready(tmp_path, engine):
    mappings = tmp_path / "worker-mappings"
    mappings.mkdir()
    (mappings / "shop.yaml").write_text(SHOP)
    loaded = []
    load = _mappings_when_needed(Config(database_url=str(engine.url), mappings_dir=mappings))
    worker = Resume(engine, lambda: loaded.append(1) or load())
    app = create_app(Config(database_url=str(engine.url), mappings_dir=mappings), engine)
    waiting = post(app.test_client(), id="e1", type="cancelled", customer="cus_9")["event_id"]
    assert worker.once() == 0 and loaded == []
    remember(engine, "shop", "default", "cus_9", "bob@example.com")
    assert worker.once() == 1 and loaded == [1]
    assert get_event(engine, waiting).status == "queued"


def test_an_event_rejected_so_before_the_upgrade_waits_too(client, engine, app):
    """Migration 0007 reads the customer id back from the reason of events rejected for it
    before; which account it was for is the mapping's: the first look renders each once,
    and from then on it waits in its rule's account."""
    known = post(client, id="e1", type="cancelled", customer="cus_9 x")["event_id"]
    unknown = post(client, id="e3", type="cancelled", customer="cus_7")["event_id"]
    cut = post(client, id="e2", type="cancelled", customer="cus_8")["event_id"]
    downgrade(engine, "0006")
    long_id = "rule 'cancelled': lead.email: no lead identity for customer cus_8" + "x" * 990
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE events SET reason = :reason WHERE id = :id"),
            {"reason": long_id[:997] + "...", "id": cut},  # as the mapping cuts a reason
        )
    migrate(engine)
    remember(engine, "shop", "default", "cus_9 x", "bob@example.com")
    remember(engine, "shop", "default", "cus_8", "eve@example.com")
    assert [(a.event_id, a.account, a.customer_id) for a in unsettled(engine)] == [
        (known, None, "cus_9 x"),
        (unknown, None, "cus_7"),
    ]
    assert resume(app, engine).once() == 2
    assert get_event(engine, known).status == "queued"
    assert get_event(engine, cut).status == "rejected"
    assert unsettled(engine) == [] and resume(app, engine).once() == 0
    remember(engine, "shop", "default", "cus_7", "ann@example.com")
    assert resume(app, engine).once() == 1
    assert get_event(engine, unknown).status == "queued"


def test_later_looks_start_from_what_was_learned_since(client, engine, app):
    looking = Resume(engine, lambda: app.extensions["relay"].mappings, full_every=3600)
    assert looking.once() == 0  # the first look sees every waiting event
    waiting = post(client, id="e1", type="cancelled", customer="cus_9")["event_id"]
    remember(engine, "shop", "default", "cus_9", "bob@example.com")
    assert looking.once() == 1
    assert get_event(engine, waiting).status == "queued"


def test_an_identity_stamped_long_before_its_event_waited_is_found_by_the_full_look(
    client, engine, app
):
    remember(engine, "shop", "default", "cus_9", "bob@example.com")
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE identities SET updated_at = :at"), {"at": utcnow() - timedelta(days=1)}
        )
    looking = Resume(engine, lambda: app.extensions["relay"].mappings, full_every=3600)
    assert looking.once() == 0
    waiting = post(client, id="e1", type="cancelled", customer="cus_9")["event_id"]
    with engine.begin() as conn:  # as if rendered before the identity was committed
        conn.execute(
            text(
                "UPDATE events SET status = 'rejected', awaiting_account = 'default', "
                "awaiting_customer = 'cus_9' WHERE id = :id"
            ),
            {"id": waiting},
        )
    assert looking.once() == 0  # learned long before the last look: not in this one
    looking.full_every = 0
    assert looking.once() == 1
    assert get_event(engine, waiting).status == "queued"
