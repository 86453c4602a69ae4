"""The admin JSON API through the Flask test client, against the fake Kartra."""

from datetime import timedelta

import pytest
from openapi_spec_validator import validate

from relay.admin.api import ENDPOINTS
from relay.config import Config
from relay.store import search
from relay.store.tables import utcnow
from relay.web import create_app
from tests.admin.conftest import KEY, PASSWORD, TOKEN, deliver, deliver_or_die, fix_mapping, post

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def api(client):
    class Api:
        def get(self, path, **kwargs):
            return client.get("/api" + path, headers=AUTH, **kwargs)

        def post(self, path, json=None):
            return client.post("/api" + path, headers=AUTH, json=json or {})

    return Api()


def test_what_happened_to_janes_purchase_and_replay_after_a_fix(api, client, app):
    jane = post(client, "jane@example.com", "o1")
    post(client, "bob@example.com", "o2")
    deliver(app)

    found = api.get("/events", query_string={"email": "jane@example.com"}).get_json()
    assert [e["id"] for e in found["events"]] == [jane]
    assert found["events"][0]["status"] == "failed"

    event = api.get(f"/events/{jane}").get_json()
    (delivery,) = event["deliveries"]
    assert "Custmer" in delivery["last_error"]
    (call,) = delivery["calls"]
    assert call["http_status"] == 200 and call["response"]["status"] == "Error"
    body = api.get(f"/events/{jane}").get_data(as_text=True)
    assert KEY not in body and PASSWORD not in body and TOKEN not in body

    fix_mapping(app)
    replayed = api.post(f"/events/{jane}/replay").get_json()
    assert replayed == {"event_id": jane, "ok": True, "status": "queued", "deliveries": 1}
    deliver(app)
    event = api.get(f"/events/{jane}").get_json()
    assert event["status"] == "delivered"
    assert [d["status"] for d in event["deliveries"]] == ["replayed", "delivered"]
    assert event["deliveries"][1]["calls"][0]["response"]["status"] == "Success"


def test_the_token_is_required_and_compared_exactly(client, engine, tmp_path, mappings_dir):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        answer = client.get("/api/events", headers=headers)
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/api/events", headers=AUTH).status_code == 200
    off = create_app(Config(database_url=str(engine.url), mappings_dir=mappings_dir), engine)
    assert off.test_client().get("/api/events", headers=AUTH).status_code == 404


def test_pagination_filters_and_validation(api, client, app):
    ids = [post(client, f"p{i}@example.com", f"o{i}") for i in range(3)]
    first = api.get("/events", query_string={"limit": 2}).get_json()
    assert [e["id"] for e in first["events"]] == [ids[2], ids[1]]
    rest = api.get("/events", query_string={"cursor": first["next_cursor"]}).get_json()
    assert [e["id"] for e in rest["events"]] == [ids[0]] and rest["next_cursor"] is None
    later = (utcnow() + timedelta(minutes=1)).isoformat()
    assert api.get("/events", query_string={"since": later}).get_json()["events"] == []
    bad = api.get("/events", query_string={"status": "lost", "limit": 0})
    assert bad.status_code == 400 and set(bad.get_json()["error"]) == {"status", "limit"}
    assert api.get("/events/ev_nope").status_code == 404


def test_bulk_replay_by_filter_retry_dead_and_counts(api, client, app, fake):
    dead = post(client, id="d1")
    ignored = post(client, id="i1", type="refund")
    fake.down = True
    deliver_or_die(app)
    fake.down = False
    assert api.get("/counts").get_json() == {
        "events": {"dead": 1, "ignored": 1},
        "deliveries": {"dead": 1},
        "routes": {"shop": {"dead": 1, "ignored": 1}},
    }
    fake.tags.add("Custmer")
    retried = api.post("/deliveries/retry").get_json()
    assert retried == {"requeued": [{"event_id": dead, "status": "queued", "deliveries": 1}]}
    deliver(app)
    results = api.post("/replay", {"filter": {"status": "delivered"}, "mode": "stored"}).get_json()[
        "results"
    ]
    assert [(r["event_id"], r["ok"]) for r in results] == [(dead, True)]
    refused = api.post("/replay", {"event_ids": [ignored], "mode": "stored"}).get_json()
    assert "no stored plan" in refused["results"][0]["error"]
    assert api.post("/replay", {}).status_code == 400
    assert api.post(f"/events/{ignored}/replay", {"mode": "stored"}).status_code == 409
    assert api.post(f"/events/{ignored}/replay", {"mode": "bogus"}).status_code == 400
    assert api.post("/events/ev_nope/replay").status_code == 404


def test_pause_and_resume_an_account(api, client, app):
    post(client)
    assert api.post("/accounts/default/pause", {"reason": "card expired"}).get_json() == {
        "name": "default",
        "paused": True,
    }
    (account,) = api.get("/accounts").get_json()["accounts"]
    assert account["paused"] and account["reason"] == "card expired"
    assert account["counts"] == {"pending": 1} and account["credentials"]
    assert deliver(app) == 0
    api.post("/accounts/default/resume")
    assert deliver(app) == 1
    unknown = api.post("/accounts/nosuch/resume")
    assert unknown.status_code == 404
    assert api.post("/accounts/default/resume").get_json() == {"name": "default", "paused": False}
    assert api.get("/accounts").get_json()["accounts"][0]["calls_today"] == 1


def test_redact(api, client, app):
    event_id = post(client)
    assert api.post("/redact", {"email": "jane@example.com"}).status_code == 409
    deliver(app)
    assert api.post("/redact", {"email": "jane@example.com"}).get_json() == {"redacted": [event_id]}
    assert api.get(f"/events/{event_id}").get_json()["payload"] is None
    assert api.post("/redact", {}).status_code == 400
    unknown = api.post("/redact", {"event_ids": ["ev_nope", event_id]})
    assert unknown.status_code == 404 and unknown.get_json() == {"error": "no such event: ev_nope"}


def test_openapi_document_is_valid_and_describes_every_endpoint(client, app):
    document = client.get("/api/openapi.json").get_json()
    validate(document)
    served = {
        (rule.rule, method.lower())
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/") and rule.endpoint != "api.openapi"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    described = {
        (path.replace("{", "<").replace("}", ">"), method)
        for path, operations in document["paths"].items()
        for method in operations
    }
    assert served == described and len(ENDPOINTS) == len(served)
    events = document["paths"]["/api/events"]["get"]
    assert {p["name"] for p in events["parameters"]} >= {"email", "status", "cursor", "text"}
    assert "EventPage" in document["components"]["schemas"]


def test_a_call_that_may_repeat_an_applied_one_is_shown_as_ambiguous(api, client, app, fake):
    event_id = post(client)
    fake.tags.add("Custmer")
    fake.down = True

    def recover(retry_state):
        fake.down = False
        return 0

    deliver(app, retry_wait=recover)
    (delivery,) = api.get(f"/events/{event_id}").get_json()["deliveries"]
    assert [(c["outcome"], c["ambiguous"]) for c in delivery["calls"]] == [
        ("ambiguous", False),
        ("ok", True),
    ]


def test_a_body_that_is_not_json_is_refused_not_read_as_no_filter(api, client, app):
    """Found by schemathesis: `\\x00` as a retry body meant `{}`, i.e. requeue every dead
    delivery; as a pause body it paused the account."""
    post(client)
    deliver_or_die(app)
    for path in ("/deliveries/retry", "/accounts/default/pause", "/replay"):
        answer = client.post(
            "/api" + path, headers=AUTH, data=b"\x00", content_type="application/json"
        )
        assert answer.status_code == 400, path
        assert answer.get_json() == {"error": {"body": ["not valid JSON"]}}
    accounts = api.get("/accounts").get_json()["accounts"]
    assert not any(account["paused"] for account in accounts)


@pytest.mark.parametrize(
    ("method", "path", "json"),
    [
        ("GET", "/api/events?cursor=%00", None),
        ("GET", "/api/events?email=a%00b", None),
        ("GET", "/api/events/ev_%00", None),
        ("POST", "/api/accounts/a%00/pause", None),
        ("GET", "/api/identities?route=%00", None),
        ("PUT", "/api/identities", {"route": "shop", "customer_id": "c\x00", "email": "a@b.co"}),
    ],
)
def test_nul_characters_are_refused_not_a_500(client, method, path, json):
    """Found by schemathesis: PostgreSQL text cannot hold NUL, and the query raised."""
    assert "NUL characters are not allowed" in refusal(client, method, path, json)


def refusal(client, method, path, json) -> str:
    """The text of the 400 the API answers."""
    answer = client.open(path, method=method, headers=AUTH, json=json)
    assert answer.status_code == 400
    return answer.get_data(as_text=True)


@pytest.mark.parametrize(
    ("method", "path", "json"),
    [
        ("POST", "/api/redact", {"event_ids": ["\ud800"]}),
        ("POST", "/api/replay", {"filter": {"text": "\udfff"}}),
        ("POST", "/api/accounts/default/pause", {"reason": "\ud800"}),
        ("PUT", "/api/identities", {"route": "shop", "customer_id": "\ud800", "email": "a@b.co"}),
    ],
)
def test_lone_surrogates_are_refused_not_a_500(client, method, path, json):
    """No database stores one as UTF-8; the ingest path refuses them too."""
    assert "nor lone surrogates" in refusal(client, method, path, json)


@pytest.mark.parametrize(
    ("method", "path", "json"),
    [
        ("GET", "/api/events?since=9999-12-31T23:59:59-05:00", None),
        ("GET", "/api/events?until=0001-01-01T00:00:00%2B05:00", None),
        ("GET", "/api/counts?since=9999-12-31T23:59:59-05:00", None),
        ("POST", "/api/replay", {"filter": {"until": "0001-01-01T00:00:00+05:00"}}),
        ("POST", "/api/deliveries/retry", {"since": "9999-12-31T23:59:59-05:00"}),
    ],
)
def test_a_moment_beyond_what_utc_holds_is_refused_not_a_500(client, method, path, json):
    assert "must fall between the years 1 and 9999 in UTC" in refusal(client, method, path, json)


@pytest.mark.parametrize("cursor", ["zzzz", "%ff", "ev_", "ev_XYZ0123456789"])
def test_a_cursor_the_api_did_not_give_is_refused(api, cursor):
    answer = api.get(f"/events?cursor={cursor}")
    assert answer.status_code == 400
    assert answer.get_json() == {"error": {"cursor": ["not a cursor this API gave"]}}


def test_the_metrics_token_is_read_as_the_apis(client):
    answer = client.get("/metrics", headers={"Authorization": f"Bearer  {TOKEN} "})
    assert answer.status_code == 200


def test_only_an_account_the_relay_deals_with_can_be_paused(api, client):
    for name in ("ghost", "a" * 65):
        answer = api.post(f"/accounts/{name}/pause", {"reason": "x"})
        assert answer.status_code == 404 and answer.get_json() == {"error": f"no account {name!r}"}
    assert api.post("/accounts/default/pause", {"reason": "x"}).status_code == 200
    assert [a["name"] for a in api.get("/accounts").get_json()["accounts"]] == ["default"]


def test_the_document_states_what_the_api_refuses(client):
    """Found by schemathesis: answers the document did not describe."""
    document = client.get("/api/openapi.json").get_json()
    identities = document["paths"]["/api/identities"]
    assert "400" in identities["get"]["responses"]
    assert identities["put"]["requestBody"]["required"] is True
    assert document["paths"]["/api/replay"]["post"]["requestBody"]["required"] is False
    (event_id,) = document["paths"]["/api/events/{event_id}"]["get"]["parameters"]
    assert event_id["schema"]["pattern"] == "^[^\\x00]*$"
    assert client.get("/api/identities?bogus=1", headers=AUTH).status_code == 400


def test_a_filter_replays_the_oldest_first_and_says_how_many_more_match(api, client, monkeypatch):
    monkeypatch.setitem(search.event_ids.__kwdefaults__, "limit", 2)  # 1,000 in use
    ids = [post(client, f"p{n}@example.com", f"o{n}", type="refund") for n in range(3)]
    answer = api.post("/replay", {"filter": {"status": "ignored"}}).get_json()
    assert [r["event_id"] for r in answer["results"]] == ids[:2] and answer["more"] == 1
    by_id = api.post("/replay", {"event_ids": ids[2:]}).get_json()
    assert by_id["more"] == 0
