"""Routes browsers post to: thank-you and error pages, a per-address limit, an Origin
check, CORS."""

import itertools

import pytest
from sqlalchemy import select

from relay.config import Config
from relay.store.tables import events
from relay.web import create_app

FORM = """
verify: none
response: {redirect: "https://example.com/thanks", error_redirect: "https://example.com/oops"}
form:
  origins: ["https://WWW.Example.com"]
  rate_limit: 3
  trust_forwarded_for: true
rules:
  - name: optin
    lead: {email: "{{ body.email }}"}
    actions: [{cmd: subscribe_lead_to_list, list_name: News}]
"""
SENT = itertools.count()
BROWSER = {"Accept": "text/html,application/xhtml+xml"}


@pytest.fixture
def clock():
    return [1_000_000.0]


@pytest.fixture
def client(tmp_path, engine, clock):
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    (mappings / "optin.yaml").write_text(FORM)
    (mappings / "plain.yaml").write_text("verify: none\nrules: [{name: r}]\n")
    app = create_app(Config(database_url=str(engine.url), mappings_dir=mappings), engine)
    app.extensions["relay.clock"] = lambda: clock[0]
    return app.test_client()


def count(engine) -> int:
    with engine.connect() as conn:
        return len(conn.execute(select(events.c.id)).all())


def post(client, data=None, address="198.51.100.7", **headers):
    headers = {"X-Forwarded-For": f"10.0.0.1, {address}", **headers}
    data = data or {"email": f"p{next(SENT)}@b.co"}  # never a duplicate
    return client.post("/hooks/optin", data=data, headers=headers)


def test_a_rejected_browser_post_goes_to_the_error_page(client, engine):
    answer = post(client, {"name": "no email"}, **BROWSER)
    assert answer.status_code == 303 and answer.location == "https://example.com/oops"
    assert count(engine) == 1  # stored as rejected, so it can be replayed
    answer = post(client, {"email": "a@b.co"}, **BROWSER)
    assert answer.location == "https://example.com/thanks"


def test_an_unreadable_browser_post_goes_to_the_error_page(client, engine):
    answer = client.post(
        "/hooks/optin",
        data=b"--x\r\nbroken",
        headers={**BROWSER, "Content-Type": "multipart/form-data; boundary=y"},
    )
    assert answer.status_code == 303 and answer.location == "https://example.com/oops"
    assert count(engine) == 0


def test_posts_per_minute_are_limited_per_client_address(client, engine, clock):
    assert [post(client).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert post(client, address="198.51.100.8").status_code == 200
    assert post(client, **BROWSER).location == "https://example.com/oops"
    clock[0] += 61
    assert post(client).status_code == 200
    assert count(engine) == 5


def test_only_the_last_forwarded_address_counts(client):
    for spoofed in ("1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"):
        headers = {"X-Forwarded-For": f"{spoofed}, 198.51.100.9"}
        last = client.post("/hooks/optin", data={"email": "a@b.co"}, headers=headers)
    assert last.status_code == 429


def test_cors_for_the_configured_origins_only(client):
    allowed = client.options("/hooks/optin", headers={"Origin": "https://www.example.com"})
    assert allowed.status_code == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://www.example.com"
    assert allowed.headers["Access-Control-Allow-Methods"] == "POST"
    other = client.options("/hooks/optin", headers={"Origin": "https://evil.example"})
    assert other.status_code == 403 and "Access-Control-Allow-Origin" not in other.headers
    assert (
        client.options("/hooks/plain", headers={"Origin": "https://x.example"}).status_code == 403
    )
    answer = client.post(
        "/hooks/optin", json={"email": "a@b.co"}, headers={"Origin": "https://www.example.com"}
    )
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == "https://www.example.com"
    assert "Access-Control-Allow-Origin" not in post(client, Origin="https://evil.example").headers


def test_posts_from_other_sites_are_refused_before_anything_is_stored(client, engine):
    assert post(client, Origin="https://www.example.com").status_code == 200
    assert post(client, Referer="https://WWW.EXAMPLE.com/signup?x=1").status_code == 200
    assert post(client).status_code == 200  # no Origin, no Referer: not a browser
    refused = post(client, Origin="https://evil.example")
    assert refused.status_code == 403
    assert refused.get_json() == {"error": "posts from this site are not accepted"}
    assert post(client, Referer="https://evil.example/page").status_code == 403
    assert post(client, Origin="null").status_code == 403
    sent_away = post(client, Origin="https://evil.example", **BROWSER)
    assert sent_away.status_code == 303 and sent_away.location == "https://example.com/oops"
    assert count(engine) == 3
    plain = client.post("/hooks/plain", data={"a": "1"}, headers={"Origin": "https://x.example"})
    assert plain.status_code == 200  # a route without `form.origins` does not check
