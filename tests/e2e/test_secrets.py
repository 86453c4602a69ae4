"""No secret in any output: every secret set to a distinctive value, a full scenario run
over real HTTP (deliveries, a Kartra error, a failed signature, a retry, admin sign-ins,
API calls, dashboard pages, the CLI's --json), then every log line, every stored row of
every table, every API answer, every page and every CLI output searched for them.

Kartra's key and password must reach the fake Kartra (KARTRA_API_URL), and only it: every
attempt the relay stored is a call the fake received.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import socket
import time
from urllib.parse import quote, quote_plus

import pytest
import requests
from sqlalchemy import MetaData, create_engine, select

from tests.e2e.conftest import APP_ID, FakeKartra, wait_until

SECRETS = {
    "KARTRA_API_KEY": "kartra-key-Q7vX3mZ9aL",
    "KARTRA_API_PASSWORD": "kartra-pw-R2nW8kT5bE",
    "ADMIN_TOKEN": "admin-token-H4cJ9pV6sU1y",
    "SHOP_SIGNING_SECRET": "whsec_shop-M8dF2gK7qN",
    "FORM_TOKEN": "form-token-T5yB3xP9wC",
    "THRIVE_FIELD_TOKEN": "thrive-field-Z6uA1rE4nJ",
    "BASIC_PASSWORD": "basic-pw-L9oI7hS2dG",
}
MAPPINGS = {
    "shop": """
verify: {scheme: stripe, secret: "${SHOP_SIGNING_SECRET}"}
event_id: "{{ body.id }}"
rules:
  - name: purchase
    when: body.type == 'purchase'
    lead: {email: "{{ body.email | email }}"}
    actions: [{cmd: assign_tag, tag_name: Customer}]
  - name: vip
    when: body.type == 'vip'
    lead: {email: "{{ body.email | email }}"}
    actions: [{cmd: assign_tag, tag_name: VIP Club}]
""",
    "form": """
verify: {scheme: token, query: token, secret: "${FORM_TOKEN}"}
rules:
  - name: optin
    lead: {email: "{{ body.email | email }}"}
    actions: [{cmd: subscribe_lead_to_list, list_name: Relay Demo}]
""",
    "thrive": """
verify: {scheme: token, field: thrivecart_secret, secret: "${THRIVE_FIELD_TOKEN}"}
rules:
  - name: order
    lead: {email: "{{ body.customer.email | email }}"}
    actions: [{cmd: assign_tag, tag_name: Customer}]
""",
    "basic": """
verify: {scheme: basic, username: hooks, secret: "${BASIC_PASSWORD}"}
rules:
  - name: signup
    lead: {email: "{{ body.email | email }}"}
    actions: [{cmd: assign_tag, tag_name: Customer}]
""",
}


def _forms(secret: str) -> set[str]:
    """The secret as it could appear in any text: plain, URL-encoded, in base64."""
    encoded = base64.b64encode(secret.encode()).decode()
    return {secret, quote(secret), quote_plus(secret), encoded, encoded.rstrip("=")}


def _stripe_headers(body: bytes, secret: str) -> dict[str, str]:
    now = int(time.time())
    digest = hmac.new(secret.encode(), f"{now}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "Stripe-Signature": f"t={now},v1={digest}"}


def _dump_database(url: str) -> str:
    """Every row of every table, as text (bytes decoded as UTF-8 and as Latin-1)."""
    engine = create_engine(url)
    metadata = MetaData()
    metadata.reflect(engine)
    lines = []
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)):
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        value = bytes(value)
                        lines += [value.decode("utf-8", "replace"), value.decode("latin-1")]
                    else:
                        lines.append(json.dumps(value, default=str, ensure_ascii=False))
                        lines.append(str(value))
    engine.dispose()
    assert len(metadata.tables) >= 5 and lines
    return "\n".join(lines)


@pytest.fixture
def kartra(tmp_path):
    fake = FakeKartra(
        tmp_path,
        "--api-key",
        SECRETS["KARTRA_API_KEY"],
        "--api-password",
        SECRETS["KARTRA_API_PASSWORD"],
    )
    yield fake
    fake.process.stop()


def test_no_secret_in_logs_rows_answers_pages_or_cli(relay_factory, kartra, tmp_path):
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    for route, text in MAPPINGS.items():
        (mappings / f"{route}.yaml").write_text(text)
    relay = relay_factory(
        KARTRA_API_URL=kartra.url + "/api",
        KARTRA_APP_ID=APP_ID,
        MAPPINGS_DIR=str(mappings),
        LOG_LEVEL="debug",
        **SECRETS,
    ).start()
    outputs: list[str] = []  # every answer, page and CLI output, searched at the end

    def keep(response: requests.Response) -> requests.Response:
        outputs.append(f"{response.status_code} {dict(response.headers)} {response.text}")
        return response

    shop_secret = SECRETS["SHOP_SIGNING_SECRET"]
    purchase = json.dumps({"id": "evt_1", "type": "purchase", "email": "jane@example.com"})
    vip = json.dumps({"id": "evt_2", "type": "vip", "email": "vip@example.com"})
    retried = json.dumps({"id": "evt_3", "type": "purchase", "email": "ret@example.com"})

    # Deliveries on every signed route, each accepted.
    ids = {}
    answer = keep(
        relay.post("shop", data=purchase, headers=_stripe_headers(purchase.encode(), shop_secret))
    )
    ids["delivered"] = answer.json()["event_id"]
    answer = keep(relay.post("shop", data=vip, headers=_stripe_headers(vip.encode(), shop_secret)))
    ids["kartra_error"] = answer.json()["event_id"]
    answer = keep(
        relay.post(
            "form", params={"token": SECRETS["FORM_TOKEN"]}, data={"email": "form@example.com"}
        )
    )
    ids["form"] = answer.json()["event_id"]
    thrive_body = {
        "customer[email]": "thrive@example.com",
        "thrivecart_secret": SECRETS["THRIVE_FIELD_TOKEN"],
    }
    ids["thrive"] = keep(relay.post("thrive", data=thrive_body)).json()["event_id"]
    basic = base64.b64encode(f"hooks:{SECRETS['BASIC_PASSWORD']}".encode()).decode()
    answer = keep(
        relay.post(
            "basic",
            json={"email": "basic@example.com"},
            headers={"Authorization": f"Basic {basic}"},
        )
    )
    ids["basic"] = answer.json()["event_id"]

    # Failed signatures: a wrong secret, the right one in the wrong place, none at all.
    wrong = shop_secret + "-wrong"
    refused = [
        relay.post("shop", data=purchase, headers=_stripe_headers(purchase.encode(), wrong)),
        relay.post("form", params={"token": SECRETS["FORM_TOKEN"] + "x"}, data={"email": "a@b.co"}),
        relay.post("form", data={"email": "a@b.co", "token": SECRETS["FORM_TOKEN"]}),
        relay.post("thrive", data={**thrive_body, "thrivecart_secret": "nope"}),
        relay.post("basic", json={}, headers={"Authorization": f"Basic {basic}x"}),
    ]
    assert [keep(r).status_code for r in refused] == [401] * len(refused)

    # A request line gunicorn cannot parse, with the query token: gunicorn logs the line
    # in its own error log (its 400 answer quotes it to the sender, who sent it).
    line = f"POST /hooks/form?token={SECRETS['FORM_TOKEN']}\x01 HTTP/1.1\r\nHost: r\r\n\r\n"
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as sock:
        sock.sendall(line.encode())
        assert sock.recv(1024).startswith(b"HTTP/1.1 400 ")
    wait_until(lambda: "Invalid request from ip=127.0.0.1" in relay.process.output())

    # Every delivery so far sent before Kartra goes down: on a busy machine the
    # dispatcher could still be on them, and a 503 would add a call to each.
    relay.wait_for_status(ids["kartra_error"], "failed")
    for name in ("delivered", "form", "thrive", "basic"):
        relay.wait_for_status(ids[name], "delivered")

    # A retry: Kartra is down for the first attempt, back for the second.
    kartra.set_down(True)
    answer = keep(
        relay.post("shop", data=retried, headers=_stripe_headers(retried.encode(), shop_secret))
    )
    ids["retried"] = answer.json()["event_id"]
    wait_until(lambda: relay.event(ids["retried"])["deliveries"][0]["attempts"] >= 1)
    kartra.set_down(False)

    relay.wait_for_status(ids["retried"], "delivered")
    stored = relay.event(ids["retried"])["deliveries"][0]["calls"]
    assert stored[0]["http_status"] == 503 and stored[-1]["http_status"] == 200
    (error_call,) = relay.event(ids["kartra_error"])["deliveries"][0]["calls"]
    assert error_call["response"]["status"] == "Error"

    # Admin sign-in: a wrong token (the real one plus a character), then the right one.
    admin = requests.Session()
    csrf = re.compile(r'name="csrf_token" value="([^"]+)"')

    def sign_in(token: str) -> requests.Response:
        page = keep(admin.get(relay.url + "/admin/login", timeout=10))
        data = {"token": token, "csrf_token": csrf.search(page.text).group(1)}
        return keep(admin.post(relay.url + "/admin/login", data=data, timeout=10))

    assert sign_in(SECRETS["ADMIN_TOKEN"] + "x").status_code == 401
    assert sign_in(SECRETS["ADMIN_TOKEN"]).url.rstrip("/").endswith("/admin")
    pages = ["/admin/", "/admin/events", "/admin/failures", "/admin/accounts"]
    pages += [f"/admin/events/{event_id}" for event_id in ids.values()]
    for page in pages:
        assert keep(admin.get(relay.url + page, timeout=10)).status_code == 200, page

    # The API with the token, and the document without it.
    auth = {"Authorization": f"Bearer {SECRETS['ADMIN_TOKEN']}"}
    calls = ["/api/events", "/api/accounts", "/api/counts", "/api/identities", "/metrics"]
    calls += [f"/api/events/{event_id}" for event_id in ids.values()]
    for path in calls:
        assert keep(requests.get(relay.url + path, headers=auth, timeout=10)).ok, path
    keep(requests.get(relay.url + "/api/openapi.json", timeout=10))
    bad = {"Authorization": f"Bearer {SECRETS['ADMIN_TOKEN']}x"}
    assert keep(requests.get(relay.url + "/api/events", headers=bad, timeout=10)).status_code == 401
    replayed = requests.post(
        f"{relay.url}/api/events/{ids['kartra_error']}/replay", headers=auth, json={}, timeout=10
    )
    assert keep(replayed).ok
    for path in ("/healthz", "/readyz"):
        keep(requests.get(relay.url + path, timeout=10))

    # The CLI, for scripts.
    commands = [["events", "--json"], ["accounts", "--json"]]
    commands += [["show", ids[name], "--json"] for name in ("kartra_error", "retried")]
    for command in commands:
        done = relay.cli(*command)
        assert done.returncode == 0, (command, done.stderr)
        outputs.append(done.stdout + done.stderr)
    assert json.loads(outputs[-1])["deliveries"][0]["status"] == "delivered"

    # Every Kartra call the relay made went to the fake Kartra, and it accepted the key.
    attempts = [
        call for event in relay.events() for d in event["deliveries"] for call in d["calls"]
    ]
    assert len(kartra.calls()) == len(attempts) >= 7

    relay.stop()
    haystacks = {
        "server log": relay.process.output(),
        "database": _dump_database(relay.env["DATABASE_URL"]),
        "answers, pages and CLI": "\n".join(outputs),
    }
    assert "verification_failed" in haystacks["server log"]
    leaks = [
        f"{name} in the {where}"
        for name, secret in SECRETS.items()
        for where, text in haystacks.items()
        if any(form in text for form in _forms(secret))
    ]
    assert leaks == []
