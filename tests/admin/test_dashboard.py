"""The dashboard through the Flask test client: sign-in, CSRF, escaping, every page."""

import hashlib
import re

import pytest
from sqlalchemy import select

from relay.store.tables import signed_out
from tests.admin.conftest import KEY, PASSWORD, TOKEN, deliver, fix_mapping, post


def csrf(page) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))[1]


def sign_in(client):
    page = client.get("/admin/login")
    answer = client.post("/admin/login", data={"token": TOKEN, "csrf_token": csrf(page)})
    assert answer.status_code == 302 and answer.headers["Location"] == "/admin/"
    return client


@pytest.fixture
def signed_in(client):
    return sign_in(client)


def sign_out(client) -> None:
    client.post("/admin/logout", data={"csrf_token": csrf(client.get("/admin/"))})


def test_pages_need_a_session_and_a_right_token(client):
    answer = client.get("/admin/events?email=x")
    assert answer.status_code == 302 and "/admin/login" in answer.headers["Location"]
    page = client.get("/admin/login")
    wrong = client.post("/admin/login", data={"token": "nope", "csrf_token": csrf(page)})
    assert wrong.status_code == 401 and "not the admin token" in wrong.get_data(as_text=True)
    assert client.get("/admin/").status_code == 302
    cookie = client.get_cookie("relay_admin")
    assert cookie.http_only and cookie.same_site == "Lax" and not cookie.secure


@pytest.mark.parametrize(
    ("base_url", "headers"),
    [
        ("https://relay.example.com", {}),
        ("http://relay.example.com", {"X-Forwarded-Proto": "https"}),
    ],
)
def test_the_cookie_is_secure_when_the_browser_came_over_https(client, base_url, headers):
    page = client.get("/admin/login", base_url=base_url, headers=headers)
    data = {"token": TOKEN, "csrf_token": csrf(page)}
    answer = client.post("/admin/login", data=data, base_url=base_url, headers=headers)
    assert answer.status_code == 302
    cookie = client.get_cookie("relay_admin", domain="relay.example.com")
    assert cookie.secure and cookie.http_only


def test_a_form_without_its_csrf_token_is_refused(signed_in, client):
    event_id = post(client)
    for path in (f"/admin/events/{event_id}/replay", "/admin/retry", "/admin/logout"):
        answer = signed_in.post(path, data={"mode": "mapping"})
        assert answer.status_code == 400 and "CSRF" in answer.get_data(as_text=True)
    assert signed_in.post("/admin/retry", data={"csrf_token": "forged"}).status_code == 400
    fresh = client.application.test_client()
    assert fresh.post("/admin/login", data={"token": TOKEN}).status_code == 400


def test_redact_an_event_from_its_page(signed_in, client, app):
    jane = post(client, "jane@example.com", "o1")
    page = signed_in.get(f"/admin/events/{jane}")
    token = csrf(page)
    waiting = signed_in.post(
        f"/admin/events/{jane}/redact", data={"csrf_token": token, "confirm": "yes"}
    )
    assert "still waiting" in signed_in.get(waiting.location).get_data(as_text=True)
    deliver(app)
    unconfirmed = signed_in.post(f"/admin/events/{jane}/redact", data={"csrf_token": token})
    assert "Tick the box" in signed_in.get(unconfirmed.location).get_data(as_text=True)
    assert "jane@example.com" in signed_in.get(f"/admin/events/{jane}").get_data(as_text=True)
    done = signed_in.post(
        f"/admin/events/{jane}/redact", data={"csrf_token": token, "confirm": "yes"}
    )
    html = signed_in.get(done.location).get_data(as_text=True)
    assert "Redacted:" in html and "jane@example.com" not in html
    missing = signed_in.post(
        "/admin/events/ev_nope/redact", data={"csrf_token": token, "confirm": "yes"}
    )
    assert missing.status_code == 404


def test_next_stays_inside_the_dashboard(client):
    page = client.get("/admin/login?next=//evil.example/x")
    answer = client.post(
        "/admin/login?next=//evil.example/x", data={"token": TOKEN, "csrf_token": csrf(page)}
    )
    assert answer.headers["Location"] == "/admin/"


def test_find_open_and_replay_an_event(signed_in, client, app):
    jane = post(client, "jane@example.com", "o1", note="<script>alert(1)</script>")
    deliver(app)
    listed = signed_in.get("/admin/events?email=jane%40example.com").get_data(as_text=True)
    assert jane in listed and "s-failed" in listed and 'http-equiv="refresh"' not in listed
    live = signed_in.get("/admin/events?email=jane%40example.com&since=1h&live=1")
    assert jane in live.get_data(as_text=True)
    assert 'http-equiv="refresh"' in live.get_data(as_text=True)
    elsewhere = signed_in.get("/admin/events?since=1h&route=elsewhere").get_data(as_text=True)
    assert jane not in elsewhere and "No events." in elsewhere
    page = signed_in.get(f"/admin/events/{jane}")
    html = page.get_data(as_text=True)
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html
    assert "Custmer" in html and "Tag does not exist" in html
    assert KEY not in html and PASSWORD not in html and TOKEN not in html
    assert "script-src" not in page.headers["Content-Security-Policy"]
    fix_mapping(app)
    answer = signed_in.post(
        f"/admin/events/{jane}/replay", data={"mode": "mapping", "csrf_token": csrf(page)}
    )
    assert answer.status_code == 302
    deliver(app)
    html = signed_in.get(f"/admin/events/{jane}").get_data(as_text=True)
    assert "Replayed: queued, 1 new delivery" in html and "s-replayed" in html
    assert "&#34;status&#34;: &#34;Success&#34;" in html


def test_failures_bulk_replay_and_accounts(signed_in, client, app):
    failed = [post(client, f"p{i}@example.com", f"o{i}") for i in range(2)]
    more = [post(client, f"q{i}@example.com", f"m{i}") for i in range(3)]
    deliver(app)
    page = signed_in.get("/admin/failures")
    html = page.get_data(as_text=True)
    assert all(f'value="{i}"' in html for i in failed)
    fix_mapping(app)
    signed_in.post(
        "/admin/replay", data={"event_id": failed, "mode": "mapping", "csrf_token": csrf(page)}
    )
    assert deliver(app) == 2
    html = signed_in.get("/admin/failures").get_data(as_text=True)
    assert "Replayed 2 of 2 event(s)." in html and failed[0] not in html and more[0] in html

    page = signed_in.get("/admin/failures")
    assert "Replay every failed event" in page.get_data(as_text=True)
    signed_in.post(
        "/admin/replay", data={"every": "failed", "mode": "mapping", "csrf_token": csrf(page)}
    )
    assert deliver(app) == len(more)
    html = signed_in.get("/admin/failures").get_data(as_text=True)
    assert f"Replayed {len(more)} of {len(more)} event(s)." in html and more[0] not in html

    page = signed_in.get("/admin/accounts")
    assert "active" in page.get_data(as_text=True)
    signed_in.post("/admin/accounts/default/pause", data={"csrf_token": csrf(page)})
    html = signed_in.get("/admin/accounts").get_data(as_text=True)
    assert "paused by an operator" in html and "Resume" in html
    assert "paused by an operator" in signed_in.get("/admin/failures").get_data(as_text=True)
    signed_in.post("/admin/accounts/default/resume", data={"csrf_token": csrf(page)})
    assert "Pause" in signed_in.get("/admin/accounts").get_data(as_text=True)


def test_overview_draws_charts_and_sign_out_ends_the_session(signed_in, client, app):
    post(client)
    deliver(app)
    page = signed_in.get("/admin/")
    html = page.get_data(as_text=True)
    assert html.count("<svg") == 4 and "limit 20/s" in html and "failed: 1" in html
    assert signed_in.get("/admin/events/ev_nope").status_code == 404
    signed_in.post("/admin/logout", data={"csrf_token": csrf(page)})
    assert signed_in.get("/admin/").status_code == 302


def test_sign_out_ends_a_copy_of_the_cookie_too(signed_in, app):
    copied = signed_in.get_cookie("relay_admin").value
    elsewhere = app.test_client()
    elsewhere.set_cookie("relay_admin", copied)
    assert elsewhere.get("/admin/").status_code == 200
    sign_out(signed_in)
    assert elsewhere.get("/admin/").status_code == 302
    later = app.test_client()
    later.set_cookie("relay_admin", copied)
    assert later.get("/admin/events").status_code == 302
    assert sign_in(app.test_client()).get("/admin/").status_code == 200


def test_a_form_posted_after_sign_out_leads_to_sign_in_then_the_overview(signed_in):
    page = signed_in.get("/admin/failures")
    token = csrf(page)
    with signed_in.session_transaction() as session:
        kept = dict(session)
    sign_out(signed_in)
    with signed_in.session_transaction() as session:
        session.update(kept)  # a tab with the page (and its cookie) from before
    answer = signed_in.post("/admin/retry", data={"csrf_token": token})
    assert answer.status_code == 302 and answer.headers["Location"] == "/admin/login"
    sign_in(signed_in)  # lands on the overview, not on a GET of /admin/retry (405)


def test_the_database_keeps_only_a_hash_of_an_ended_session(signed_in, engine):
    with signed_in.session_transaction() as session:
        session_id = session["sid"]
    sign_out(signed_in)
    with engine.connect() as conn:
        [(stored,)] = conn.execute(select(signed_out.c.session_hash)).all()
    assert stored == hashlib.sha256(session_id.encode()).hexdigest()


@pytest.mark.parametrize(
    "path", ["/admin/events?email=a%00", "/admin/events?text=%00", "/admin/events/ev_%00"]
)
def test_nul_characters_are_refused_not_a_500(signed_in, client, path):
    """Like the API's (found there by schemathesis): a 500 on PostgreSQL."""
    answer = client.get(path)
    assert answer.status_code == 400
    assert "NUL characters are not allowed" in answer.get_data(as_text=True)


def test_a_webhook_opens_no_session(app):
    """The admin session is the dashboard's: a webhook gets Flask's null session, which
    is never signed, read from a cookie or saved."""
    from flask import request

    with app.test_request_context("/hooks/shop", method="POST"):
        assert app.session_interface.open_session(app, request) is None
    with app.test_request_context("/admin/"):
        assert app.session_interface.open_session(app, request) is not None
