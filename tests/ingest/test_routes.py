"""`POST /hooks/<route>` through the Flask test client, on a real SQLite database."""

import gzip
import json

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from structlog.testing import capture_logs

from relay.config import Config
from relay.ingest import routes
from relay.store.tables import deliveries, events
from relay.web import create_app
from tests.conftest import ROOT

SHOP = """
verify: none
response: {status: 202}
event_id: "{{ body.id }}"
rules:
  - name: purchase
    when: body.type == 'purchase'
    lead:
      email: "{{ body.email | email }}"
    actions:
      - {cmd: assign_tag, tag_name: Customer}
"""

OPTIN = """
verify: none
response: {redirect: "https://example.com/thanks"}
rules:
  - name: optin
    lead:
      email: "{{ body.email }}"
    actions:
      - {cmd: subscribe_lead_to_list, list_name: News}
"""


@pytest.fixture
def app(tmp_path, engine):
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    (mappings / "shop.yaml").write_text(SHOP)
    (mappings / "optin.yaml").write_text(OPTIN)
    (mappings / "demo-form.yaml").write_text((ROOT / "mappings" / "demo-form.yaml").read_text())
    config = Config(database_url=str(engine.url), mappings_dir=mappings, max_body_bytes=2048)
    return create_app(config, engine)


@pytest.fixture
def client(app):
    return app.test_client()


def rows(engine, table):
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(table))]


def test_event_and_plan_are_committed_before_the_answer(client, engine, app):
    raw = b"email=Jane%40Example.com+&first_name=Jane"
    answer = client.post(
        "/hooks/demo-form", data=raw, content_type="application/x-www-form-urlencoded"
    )
    assert answer.status_code == 200
    [event] = rows(engine, events)
    assert answer.json == {"event_id": event["id"], "status": "queued"}
    assert event["payload"]["first_name"] == "Jane"
    assert event["body"] == raw
    [delivery] = rows(engine, deliveries)
    assert delivery["plan"]["lead"]["email"] == "jane@example.com"
    assert app.extensions["relay"].wake.is_set()


def test_route_can_answer_202_and_dedupes_on_the_senders_event_id(client, engine):
    body = {"id": "evt_1", "type": "purchase", "email": "a@b.co"}
    first = client.post("/hooks/shop", json=body)
    assert first.status_code == 202
    retried = client.post("/hooks/shop", json={**body, "retry_count": 1})
    assert retried.status_code == 200
    assert retried.json == {
        "event_id": first.json["event_id"],
        "status": "queued",
        "duplicate": True,
    }
    assert len(rows(engine, events)) == 1 and len(rows(engine, deliveries)) == 1


def test_long_event_ids_that_differ_only_at_their_end_are_two_events(client, engine):
    """The dedupe column holds 300 characters: a longer id is hashed whole, not cut."""
    for last in "ab":
        body = {"id": "evt_" + "x" * 400 + last, "type": "purchase", "email": "a@b.co"}
        assert client.post("/hooks/shop", json=body).status_code == 202
        assert client.post("/hooks/shop", json=body).json["duplicate"] is True
    assert len(rows(engine, events)) == 2


def test_a_lead_id_too_long_for_kartra_is_a_stored_rejection(app, client, engine, tmp_path):
    (tmp_path / "mappings" / "by-id.yaml").write_text(
        "verify: none\nrules:\n  - name: tag\n    lead: {mode: existing, id: '{{ body.id }}'}\n"
        "    actions: [{cmd: assign_tag, tag_name: Customer}]\n"
    )
    app = create_app(app.extensions["relay"].config, engine)
    answer = app.test_client().post("/hooks/by-id", json={"id": "9" * 500})
    assert answer.status_code == 200 and answer.json["status"] == "rejected"
    [event] = rows(engine, events)
    assert event["reason"] == (
        "rule 'tag': lead.id is 500 characters long; a Kartra lead id has at most 64"
    )


def test_a_number_too_large_for_kartra_is_a_stored_rejection_not_a_500(app, engine, tmp_path):
    """A 900-digit number parses; its fifth power has 4,500 digits, past what str() and
    so the stored plan's JSON can write."""
    power = "body.q * body.q * body.q * body.q * body.q"
    (tmp_path / "mappings" / "points.yaml").write_text(
        f"verify: none\nevent_id: '{{{{ {power} }}}}'\nrules:\n  - name: give\n"
        "    lead: {email: a@b.co}\n"
        f"    actions: [{{cmd: give_points_to_lead, points: '{{{{ {power} }}}}'}}]\n"
    )
    client = create_app(app.extensions["relay"].config, engine).test_client()
    answer = client.post("/hooks/points", json={"q": 10**900})
    assert answer.status_code == 200 and answer.json["status"] == "rejected"
    [event] = rows(engine, events)
    assert event["reason"] == (
        "rule 'give': actions[0].points rendered a number Kartra cannot hold, not a single value"
    )


def test_without_an_event_id_the_body_hash_dedupes(client, engine):
    client.post("/hooks/optin", data={"email": "a@b.co"})
    client.post("/hooks/optin", data={"email": "a@b.co"})
    client.post("/hooks/optin", data={"email": "c@d.co"})
    assert len(rows(engine, events)) == 2


def test_a_public_form_submitted_again_later_is_a_new_event(app, engine):
    """A double click is a duplicate; the same person submitting the same form again
    after the window is a new event, not silently dropped for the event's whole life."""
    clock = [1_800_000_000.0]
    app.extensions["relay.clock"] = lambda: clock[0]
    client = app.test_client()
    first = client.post("/hooks/optin", data={"email": "a@b.co"}).json
    clock[0] += 1
    double_click = client.post("/hooks/optin", data={"email": "a@b.co"}).json
    clock[0] += routes.FORM_DEDUPE_WINDOW
    again = client.post("/hooks/optin", data={"email": "a@b.co"}).json
    assert double_click == {**first, "duplicate": True}
    assert "duplicate" not in again and again["event_id"] != first["event_id"]
    assert len(rows(engine, events)) == 2


def test_a_verified_route_dedupes_the_body_for_as_long_as_the_event_is_kept(
    tmp_path, engine, monkeypatch
):
    """A sender that signs and retries sends the same body again hours later."""
    mappings = tmp_path / "signed"
    mappings.mkdir()
    monkeypatch.setenv("SIGNED_TOKEN", "t")
    signed = OPTIN.replace(
        "verify: none", "verify: {scheme: token, secret: '${SIGNED_TOKEN}', query: token}"
    )
    (mappings / "signed.yaml").write_text(signed)
    config = Config(database_url=str(engine.url), mappings_dir=mappings)
    app = create_app(config, engine)
    clock = [1_800_000_000.0]
    app.extensions["relay.clock"] = lambda: clock[0]
    for _ in range(2):
        answer = app.test_client().post("/hooks/signed?token=t", data={"email": "a@b.co"})
        assert answer.status_code == 200
        clock[0] += 86_400
    assert len(rows(engine, events)) == 1


def test_no_matching_rule_is_stored_as_ignored(client, engine):
    answer = client.post("/hooks/shop", json={"id": "evt_2", "type": "refund"})
    assert answer.status_code == 202 and answer.json["status"] == "ignored"
    [event] = rows(engine, events)
    assert event["status"] == "ignored" and rows(engine, deliveries) == []


def test_a_rule_without_email_rejects_with_a_stored_reason(client, engine):
    answer = client.post("/hooks/demo-form", data={"first_name": "Nobody"})
    assert answer.json["status"] == "rejected"
    [event] = rows(engine, events)
    assert event["reason"] and rows(engine, deliveries) == []


def test_browser_form_posts_are_redirected_to_the_thank_you_page(client, engine):
    answer = client.post(
        "/hooks/optin",
        data={"email": "a@b.co"},
        headers={"Accept": "text/html,application/xhtml+xml"},
    )
    assert answer.status_code == 303
    assert answer.headers["Location"] == "https://example.com/thanks"
    assert len(rows(engine, events)) == 1


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "words"),
    [
        ("/hooks/nope", {"json": {}}, 404, "unknown route"),
        (
            "/hooks/demo-form",
            {"data": b"{", "content_type": "application/json"},
            400,
            "invalid JSON",
        ),
        ("/hooks/demo-form", {"data": b"a,b", "content_type": "text/csv"}, 415, "content type"),
        ("/hooks/demo-form", {"data": {"email": "x" * 4000}}, 413, "larger than"),
        # Found by the fuzzer: PostgreSQL cannot store these, so they were 500s there.
        (
            "/hooks/shop",
            {"data": b'{"id": 1, "n": NaN}', "content_type": "application/json"},
            400,
            "NaN",
        ),
        (
            "/hooks/shop",
            {"data": b'{"id": "\\ud83d"}', "content_type": "application/json"},
            400,
            "lone surrogate",
        ),
        (
            "/hooks/shop",
            {"data": b'{"id": 1, "email": "a\\u0000@b.co"}', "content_type": "application/json"},
            400,
            "NUL character",
        ),
    ],
)
def test_refusals_store_nothing_and_name_the_problem(client, engine, path, kwargs, status, words):
    answer = client.post(path, **kwargs)
    assert answer.status_code == status
    assert words in answer.json["error"]
    assert rows(engine, events) == []


def test_a_form_of_numeric_names_is_stored_as_an_object(client, engine):
    """Found by the fuzzer: the body became a list and the request a 500."""
    answer = client.post("/hooks/demo-form", data={"0": "a", "1": "b"})
    assert answer.status_code == 200
    assert answer.json["status"] == "rejected"
    (event,) = rows(engine, events)
    assert event["payload"] == {"0": "a", "1": "b"}


def test_credentials_in_headers_are_not_stored(client, engine):
    client.post(
        "/hooks/demo-form",
        data={"email": "a@b.co"},
        headers={"Authorization": "Basic c2VjcmV0", "X-Custom": "kept"},
    )
    [event] = rows(engine, events)
    assert "authorization" not in event["headers"]
    assert event["headers"]["x-custom"] == "kept"


def test_a_query_parameter_given_twice_is_a_list_as_a_form_field_is(client, engine):
    client.post("/hooks/demo-form?source=ads&tag=a&tag=b", data={"email": "a@b.co"})
    [event] = rows(engine, events)
    assert event["query"] == {"source": "ads", "tag": ["a", "b"]}


def test_a_method_not_allowed_says_which_is(client):
    answer = client.get("/hooks/demo-form")
    assert answer.status_code == 405 and "POST" in answer.headers["Allow"]
    assert answer.is_json


def test_probes(client):
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json["checks"] == {"mappings": True, "database": True}


def test_readyz_fails_before_migrations(tmp_path):
    from relay.store import connect

    config = Config(database_url=f"sqlite:///{tmp_path}/empty.db", mappings_dir=ROOT / "mappings")
    client = create_app(config, connect(config.database_url)).test_client()
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert json.loads(answer.data)["checks"]["database"] is False


def test_storage_away_is_503_with_retry_after(client, engine, monkeypatch):
    def away(*args, **kwargs):
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(routes, "store_event", away)
    answer = client.post("/hooks/optin", data={"email": "a@b.co"})
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "30"
    assert answer.json == {"error": "storage unavailable; retry later"}
    assert rows(engine, events) == []


def test_credentials_in_headers_and_query_are_masked_before_they_are_stored(client, engine):
    """Only the route's own token is known to the relay; a sender's other credentials
    must not sit in the database in clear either (docs/security.md)."""
    client.post(
        "/hooks/optin?api_key=QKEY&token=QTOK&password=QPASS&list=news",
        data={"email": "a@b.co"},
        headers={
            "X-Auth-Token": "T1",
            "X-Webhook-Secret": "S1",
            "X-Shopify-Hmac-Sha256": "H1",
            "X-Source": "site",
        },
    )
    [event] = rows(engine, events)
    assert event["query"] == {
        "api_key": "***",
        "token": "***",
        "password": "***",
        "list": "news",
    }
    headers = event["headers"]
    assert headers["x-auth-token"] == headers["x-webhook-secret"] == "***"
    assert headers["x-shopify-hmac-sha256"] == "***" and headers["x-source"] == "site"


def test_a_compressed_body_is_refused_by_name_not_as_bad_text(client, engine):
    answer = client.post(
        "/hooks/optin",
        data=gzip.compress(b"email=a%40b.co"),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 415
    assert answer.json == {
        "error": "Content-Encoding 'gzip' is not supported: send the body as it is"
    }
    assert rows(engine, events) == []
    identity = client.post(
        "/hooks/optin", data={"email": "a@b.co"}, headers={"Content-Encoding": "identity"}
    )
    assert identity.json["status"] == "queued"


def test_the_log_masks_an_address_quoted_in_a_rejection_reason(client, engine):
    with capture_logs() as logs:
        client.post("/hooks/demo-form", data={"email": "jane.doe@gmail"})
    [received] = [line for line in logs if line["event"] == "event_received"]
    assert received["reason"] == "rule 'signup': lead.email 'j***@gmail' is not an email address"
    [event] = rows(engine, events)
    assert "jane.doe@gmail" in event["reason"]  # the operator's record keeps the value to fix
