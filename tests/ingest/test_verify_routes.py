"""Verification in `POST /hooks/<route>`: before anything is stored, 401 without detail."""

import hashlib
import hmac
import json

import pytest
from sqlalchemy import select
from structlog.testing import capture_logs

from relay.config import Config
from relay.ingest import verify
from relay.ingest.verify import Unavailable
from relay.ingest.verify.paypal import Certificates
from relay.store.tables import events
from relay.web import create_app
from tests.conftest import FIXTURES
from tests.ingest.verify.conftest import test_certificates

SECRET = "whsec_test_secret"
SIGNED_AT = 1767225600
ROUTES = {
    "stripe": """
        verify: {scheme: stripe, secret: "${STRIPE_SECRET}", tolerance: 60}
        event_id: "{{ body.id }}"
        rules: [{name: all, lead: {email: a@b.co}, actions: [{cmd: assign_tag, tag_name: T}]}]
    """,
    "forms": """
        verify: {scheme: token, query: token, secret: "${FORM_TOKEN}"}
        rules: [{name: all}]
    """,
    "gravity": """
        verify: {scheme: token, header: X-Relay-Token, secret: "${FORM_TOKEN}"}
        rules: [{name: all}]
    """,
    "thrive": """
        verify: {scheme: token, field: thrivecart_secret, secret: "${FORM_TOKEN}"}
        rules: [{name: all}]
    """,
    "woo": """
        verify: {scheme: woocommerce, secret: "${STRIPE_SECRET}"}
        rules: [{name: all}]
    """,
    "paypal": """
        verify: {scheme: paypal, webhook_id: 8PT597110X687430LFIXTURE}
        event_id: "{{ body.id }}"
        rules: [{name: all}]
    """,
}


@pytest.fixture
def app(tmp_path, engine, monkeypatch):
    monkeypatch.setenv("STRIPE_SECRET", SECRET)
    monkeypatch.setenv("FORM_TOKEN", "tok-" + "x" * 20)
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    for route, text in ROUTES.items():
        (mappings / f"{route}.yaml").write_text(
            "\n".join(line.removeprefix("        ") for line in text.splitlines())
        )
    app = create_app(Config(database_url=str(engine.url), mappings_dir=mappings), engine)
    app.extensions["relay.clock"] = lambda: SIGNED_AT + 30
    app.extensions["relay.paypal_certificates"] = test_certificates()
    return app


@pytest.fixture
def client(app):
    return app.test_client()


def stored(engine):
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(events))]


def fixture(sender: str, name: str) -> tuple[bytes, dict]:
    folder = FIXTURES / sender
    body = next(p for p in folder.glob(name + ".*") if not p.name.endswith("headers.json"))
    return body.read_bytes(), json.loads((folder / f"{name}.headers.json").read_text())


def stripe_header(body: bytes, t: int = SIGNED_AT, secret: str = SECRET) -> str:
    signature = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={signature}"


def test_a_signed_fixture_is_stored(client, engine):
    body, headers = fixture("stripe", "checkout.session.completed")
    answer = client.post("/hooks/stripe", data=body, headers=headers)
    assert answer.status_code == 200
    [event] = stored(engine)
    assert event["dedupe_key"] == "id:" + json.loads(body)["id"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda b, h: (b.replace(b"jane", b"jake"), h), "no signature matches"),
        (
            lambda b, h: (b, {**h, "Stripe-Signature": stripe_header(b, secret="whsec_no")}),
            "no signature",
        ),
        (
            lambda b, h: (b, {**h, "Stripe-Signature": stripe_header(b, SIGNED_AT - 120)}),
            "tolerance",
        ),
        (lambda b, h: (b, {"Content-Type": h["Content-Type"]}), "header Stripe-Signature missing"),
    ],
    ids=["tampered", "wrong-secret", "old", "missing-header"],
)
def test_a_bad_signature_is_401_stores_nothing_logs_why_and_counts(client, engine, change, reason):
    body, headers = change(*fixture("stripe", "checkout.session.completed"))
    before = verify.failures().get("stripe", 0)
    with capture_logs() as logs:
        answer = client.post("/hooks/stripe", data=body, headers=headers)
    assert answer.status_code == 401
    assert answer.get_json() == {"error": "unauthorized"}
    assert stored(engine) == []
    [line] = [x for x in logs if x["event"] == "verification_failed"]
    assert reason in line["reason"] and line["route"] == "stripe" and line["scheme"] == "stripe"
    assert SECRET not in json.dumps(logs)
    assert verify.failures()["stripe"] == before + 1


def test_a_query_token_is_checked_and_never_stored(client, engine):
    assert client.post("/hooks/forms?token=guess", json={"a": 1}).status_code == 401
    assert client.post("/hooks/forms", json={"a": 1}).status_code == 401
    token = "tok-" + "x" * 20
    assert client.post(f"/hooks/forms?token={token}&token=x", json={"a": 1}).status_code == 401
    assert client.post(f"/hooks/forms?token={token}&src=ad", json={"a": 1}).status_code == 200
    [event] = stored(engine)
    assert event["query"] == {"src": "ad"}


def test_a_header_token_is_checked_and_never_stored(client, engine):
    body, headers = fixture("gravityforms", "entry-all-fields")
    assert client.post("/hooks/gravity", data=body, headers=headers).status_code == 401
    headers["X-Relay-Token"] = "tok-" + "x" * 20
    assert client.post("/hooks/gravity", data=body, headers=headers).status_code == 200
    [event] = stored(engine)
    assert "x-relay-token" not in event["headers"]


def test_a_body_field_token_is_checked_and_stored_nowhere(client, engine):
    """Found by the secrets test: the token was kept in the stored raw body."""
    token = "tok-" + "x" * 20
    body = f"customer%5Bemail%5D=a%40b.co&thrivecart_secret={token}&mode=live".encode()
    form = {"content_type": "application/x-www-form-urlencoded"}
    assert (
        client.post("/hooks/thrive", data=body.replace(b"tok-", b"bad-"), **form).status_code == 401
    )
    assert client.post("/hooks/thrive", data=body, **form).status_code == 200
    [event] = stored(engine)
    assert bytes(event["body"]) == b"customer%5Bemail%5D=a%40b.co&mode=live"
    assert event["payload"] == {"customer": {"email": "a@b.co"}, "mode": "live"}


def test_woocommerce_ping_is_answered_200_and_stores_nothing(client, engine):
    body, headers = fixture("woocommerce", "ping")
    assert client.post("/hooks/woo", data=body, headers=headers).status_code == 200
    assert stored(engine) == []
    assert client.post("/hooks/woo", data=b"webhook_id=7&x=1", headers=headers).status_code == 401


def test_paypal_with_an_injected_certificate(client, engine):
    body, headers = fixture("paypal", "CHECKOUT.ORDER.COMPLETED")
    assert client.post("/hooks/paypal", data=body, headers=headers).status_code == 200
    elsewhere = {**headers, "PAYPAL-CERT-URL": "https://evil.example/cert.pem"}
    assert client.post("/hooks/paypal", data=body, headers=elsewhere).status_code == 401
    assert len(stored(engine)) == 1


def test_paypal_certificate_out_of_reach_is_503_with_retry_after(app, engine):
    def unreachable(url):
        raise Unavailable("certificate download failed: ConnectTimeout")

    app.extensions["relay.paypal_certificates"] = Certificates(fetch=unreachable)
    before = verify.failures().get("paypal", 0)
    body, headers = fixture("paypal", "CHECKOUT.ORDER.COMPLETED")
    answer = app.test_client().post("/hooks/paypal", data=body, headers=headers)
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "60"
    assert answer.json == {"error": "cannot check the signature now; retry later"}
    assert stored(engine) == [] and verify.failures().get("paypal", 0) == before


def test_head_on_a_known_route_is_200_for_thrivecart(client):
    assert client.head("/hooks/forms").status_code == 200
    assert client.head("/hooks/nope").status_code == 404
