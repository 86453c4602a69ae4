"""The whole path, for real: a sender posts to the running relay, the relay calls the
fake Kartra over HTTP. Both run as separate processes on 127.0.0.1."""

import json

import requests

from tests.conftest import FIXTURES
from tests.e2e.conftest import API_KEY, API_PASSWORD, FakeKartra, live_env, wait_until

DEMO = {"email": "jane@example.com", "first_name": "Jane", "last_name": "Doe"}


def commands(call):
    return [a["cmd"] for a in call["params"]["actions"]]


def test_dry_run_stores_the_calls_it_would_make_and_sends_nothing(relay_factory, fake_kartra):
    relay = relay_factory(KARTRA_API_URL=fake_kartra.url + "/api").start()
    answer = relay.post("demo-form", data=DEMO)
    assert answer.status_code == 200
    event_id = answer.json()["event_id"]
    event = relay.wait_for_status(event_id, "dry_run")
    [delivery] = event["deliveries"]
    [attempt] = delivery["calls"]
    assert attempt["outcome"] == "dry_run"
    [line] = [x for x in relay.process.log_lines() if x.get("event") == "kartra_call"]
    assert line["outcome"] == "dry_run" and line["lead"] == "j***@example.com"
    request = attempt["request"]
    assert request["lead"]["email"] == "jane@example.com"
    assert [a["cmd"] for a in request["actions"]] == [
        "create_lead",
        "assign_tag",
        "subscribe_lead_to_list",
    ]
    assert fake_kartra.calls() == []
    assert '"mode": "dry-run"' in relay.process.output()


def test_new_lead_is_one_call_and_a_second_post_updates_it(relay_factory, fake_kartra):
    relay = relay_factory(**live_env(fake_kartra)).start()
    first = relay.post("demo-form", data=DEMO).json()["event_id"]
    relay.wait_for_status(first, "delivered")
    [call] = fake_kartra.calls()
    assert commands(call) == ["create_lead", "assign_tag", "subscribe_lead_to_list"]
    [lead] = fake_kartra.leads()
    assert lead["email"] == "jane@example.com"
    assert lead["tags"] == ["Relay Demo"] and lead["lists"] == ["Relay Demo"]

    second = relay.post("demo-form", json={**DEMO, "first_name": "Janet"}).json()["event_id"]
    relay.wait_for_status(second, "delivered")
    calls = fake_kartra.calls()
    assert len(calls) == 2
    assert commands(calls[1])[0] == "edit_lead"
    assert calls[1]["params"]["lead"]["id"] == lead["id"]
    [lead] = fake_kartra.leads()
    assert lead["fields"]["first_name"] == "Janet"


def test_duplicate_delivery_is_answered_with_the_original_id(relay_factory, fake_kartra):
    relay = relay_factory(**live_env(fake_kartra)).start()
    first = relay.post("demo-form", data=DEMO)
    again = relay.post("demo-form", data=DEMO)
    assert again.status_code == 200
    assert again.json()["event_id"] == first.json()["event_id"]
    assert again.json()["duplicate"] is True
    relay.wait_for_status(first.json()["event_id"], "delivered")
    assert len(relay.events()) == 1
    assert len(fake_kartra.calls()) == 1


def test_events_posted_while_kartra_is_down_arrive_after_it_recovers_across_a_restart(
    relay_factory, fake_kartra
):
    fake_kartra.set_down(True)
    relay = relay_factory(**live_env(fake_kartra)).start()
    ids = [
        relay.post("demo-form", data={**DEMO, "email": f"p{i}@example.com"}).json()["event_id"]
        for i in range(3)
    ]
    wait_until(lambda: all(e["deliveries"][0]["attempts"] for e in relay.events()), timeout=30)
    assert {e["status"] for e in relay.events()} == {"queued"}
    assert relay.stop() < 10

    fake_kartra.set_down(False)
    relay.start()
    for event_id in ids:
        relay.wait_for_status(event_id, "delivered", timeout=30)
    created = [c for c in fake_kartra.calls() if c["status"] == 200]
    assert sorted(c["params"]["lead"]["email"] for c in created) == [
        "p0@example.com",
        "p1@example.com",
        "p2@example.com",
    ]


def test_bad_credentials_pause_the_account_instead_of_burning_retries(relay_factory, fake_kartra):
    relay = relay_factory(**live_env(fake_kartra, KARTRA_API_PASSWORD="wrong-password"))
    relay.start()
    event_id = relay.post("demo-form", data=DEMO).json()["event_id"]
    wait_until(lambda: "PAUSED" in relay.cli("accounts").stdout)
    event = relay.event(event_id)
    assert event["status"] == "queued"
    assert event["deliveries"][0]["attempts"] == 0
    assert "233" in relay.cli("accounts").stdout
    relay.stop()

    relay.env["KARTRA_API_PASSWORD"] = API_PASSWORD
    assert "resumed" in relay.cli("accounts", "resume", "default").stdout
    relay.start()
    relay.wait_for_status(event_id, "delivered")


def test_missing_tag_fails_the_delivery_with_the_code_and_a_hint(relay_factory, tmp_path):
    fake = FakeKartra(tmp_path, "--tags", "Something Else")
    try:
        relay = relay_factory(**live_env(fake)).start()
        event_id = relay.post("demo-form", data=DEMO).json()["event_id"]
        event = relay.wait_for_status(event_id, "failed")
        error = event["deliveries"][0]["last_error"]
        assert "212" in error and "Relay Demo" in error
    finally:
        fake.process.stop()


def test_one_log_line_per_kartra_call_and_no_secret_anywhere(relay_factory, fake_kartra):
    relay = relay_factory(**live_env(fake_kartra)).start()
    event_id = relay.post("demo-form", data=DEMO).json()["event_id"]
    relay.wait_for_status(event_id, "delivered")
    relay.stop()
    calls = [line for line in relay.process.log_lines() if line.get("event") == "kartra_call"]
    assert len(calls) == len(fake_kartra.calls()) == 1
    [line] = calls
    assert line["event_id"] == event_id
    assert line["lead"] == "j***@example.com"
    assert line["commands"] == ["create_lead", "assign_tag", "subscribe_lead_to_list"]
    assert line["http_status"] == 200 and line["outcome"] == "ok"
    assert {"delivery_id", "rule", "account", "attempt", "duration_ms", "results"} <= set(line)
    stored = json.dumps(relay.events(), default=str)
    for secret in (API_KEY, API_PASSWORD):
        assert secret not in relay.process.output()
        assert secret not in stored


def test_sender_fixtures_are_received_and_stored(relay_factory):
    relay = relay_factory().start()
    for name in ("html-form/optin.urlencoded.txt", "html-form/contact.multipart.txt"):
        file = FIXTURES / name
        headers = json.loads(file.with_name(file.stem + ".headers.json").read_text())
        headers.pop("Accept", None)
        answer = relay.post("demo-form", data=file.read_bytes(), headers=headers)
        assert answer.status_code == 200, answer.text
        event = relay.wait_for_status(answer.json()["event_id"], "dry_run")
        assert event["deliveries"][0]["plan"]["lead"]["email"] == "mia.anderson@example.com"


def test_http_contract(relay_factory):
    relay = relay_factory(MAX_BODY_BYTES="2048").start()
    assert relay.post("no-such-route", data=DEMO).status_code == 404
    bad = relay.post("demo-form", data=b"{oops", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and "invalid JSON" in bad.json()["error"]
    assert (
        relay.post("demo-form", data=b"x", headers={"Content-Type": "text/csv"}).status_code == 415
    )
    too_big = relay.post("demo-form", data={"email": "a@b.co", "pad": "x" * 4096})
    assert too_big.status_code == 413
    chunked = relay.post(
        "demo-form",
        data=iter([b"email=a%40b.co&pad=", b"x" * 4096]),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert chunked.status_code == 413
    rejected = relay.post("demo-form", data={"first_name": "No Email"})
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    assert len(relay.events()) == 1
    assert requests.get(relay.url + "/healthz", timeout=2).json() == {"status": "ok"}
    assert requests.get(relay.url + "/readyz", timeout=2).status_code == 200
