"""Abuse: rate limits on the hooks (per address, per route, a form's own) and on admin
sign-in, answered 429 with Retry-After; a bad signature costs no database work."""

import itertools
import re

import pytest
from sqlalchemy import event, func, select

from relay.config import Config, ConfigError
from relay.ingest.forms import MAX_ADDRESSES, RateLimit
from relay.store.tables import events
from relay.web import create_app

TOKEN = "abuse-admin-token-0123456789"
SENT = itertools.count()
FORM = """
verify: none
form: {rate_limit: 2}
rules: [{name: r, lead: {email: "{{ body.email }}"}, actions: [{cmd: assign_tag, tag_name: T}]}]
"""


@pytest.fixture
def clock():
    return [1_000_000.0]


@pytest.fixture
def make_client(tmp_path, engine, clock, monkeypatch):
    monkeypatch.setenv("FORM_TOKEN", "form-token-0123456789")
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    (mappings / "open.yaml").write_text("verify: none\nrules: [{name: r}]\n")
    (mappings / "other.yaml").write_text("verify: none\nrules: [{name: r}]\n")
    (mappings / "form.yaml").write_text(FORM)
    (mappings / "signed.yaml").write_text(
        'verify: {scheme: token, header: X-Relay-Token, secret: "${FORM_TOKEN}"}\n'
        "rules: [{name: r}]\n"
    )

    def make(**settings):
        config = Config(
            database_url=str(engine.url), mappings_dir=mappings, admin_token=TOKEN, **settings
        )
        app = create_app(config, engine)
        app.extensions["relay.clock"] = lambda: clock[0]
        return app.test_client()

    return make


def stored(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(events)).scalar()


def post(client, route="open", address="198.51.100.7", **headers):
    return client.post(
        f"/hooks/{route}",
        json={"email": f"p{next(SENT)}@example.com"},  # never a duplicate
        headers=headers,
        environ_base={"REMOTE_ADDR": address},
    )


def test_hook_limits_are_off_by_default_so_a_launch_day_burst_passes(make_client, engine):
    config = Config.from_env({})
    assert config.ingest_rate_limit_per_ip == config.ingest_rate_limit_per_route == 0
    client = make_client()
    assert {post(client).status_code for _ in range(300)} == {200}
    assert stored(engine) == 300


def test_posts_per_minute_per_address_across_routes(make_client, engine, clock):
    client = make_client(ingest_rate_limit_per_ip=3)
    answers = [post(client), post(client, "other"), post(client), post(client, "other")]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    refused = answers[-1]
    assert refused.get_json() == {"error": "too many posts; try again in 20 s"}
    assert refused.headers["Retry-After"] == "20"  # the minute's window ends in 20 s
    assert post(client, "nowhere").status_code == 429  # probing unknown routes counts too
    assert post(client, address="198.51.100.8").status_code == 200
    assert stored(engine) == 4
    clock[0] += 60
    assert post(client).status_code == 200


def test_the_forwarded_address_counts_only_when_trusted(make_client):
    spoofing = [f"10.0.0.{i}, 203.0.113.9" for i in range(3)]
    trusted = make_client(ingest_rate_limit_per_ip=2, trust_x_forwarded_for=True)
    assert [post(trusted, **{"X-Forwarded-For": x}).status_code for x in spoofing] == [
        200,
        200,
        429,
    ]
    assert post(trusted, **{"X-Forwarded-For": "203.0.113.10"}).status_code == 200
    untrusted = make_client(ingest_rate_limit_per_ip=2)
    answers = [post(untrusted, **{"X-Forwarded-For": f"203.0.113.{i}"}) for i in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]  # the connection's address


def test_posts_per_minute_per_route_from_every_address(make_client, engine):
    client = make_client(ingest_rate_limit_per_route=2)
    answers = [post(client, address=f"198.51.100.{i}") for i in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert "Retry-After" in answers[-1].headers
    assert post(client, "other").status_code == 200
    assert post(client, "nowhere").status_code == 404
    assert stored(engine) == 3


def test_a_form_routes_own_limit_answers_retry_after(make_client, engine):
    client = make_client()
    answers = [post(client, "form") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[-1].headers["Retry-After"] == "20"
    assert answers[-1].get_json() == {
        "error": "too many posts from your address; try again in 20 s"
    }
    assert stored(engine) == 2


def test_a_bad_signature_runs_no_sql_at_all(make_client, engine):
    client = make_client()
    statements = []

    def count(*args):
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", count)
    try:
        for headers in ({}, {"X-Relay-Token": "guess"}):
            assert post(client, "signed", **headers).status_code == 401
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert statements == []
    assert post(client, "signed", **{"X-Relay-Token": "form-token-0123456789"}).status_code == 200


def sign_in(client, token: str, address: str = "192.0.2.1"):
    page = client.get("/admin/login", environ_base={"REMOTE_ADDR": address})
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    return client.post(
        "/admin/login",
        data={"token": token, "csrf_token": csrf},
        environ_base={"REMOTE_ADDR": address},
    )


def test_failed_sign_ins_are_limited_per_address(make_client, clock):
    client = make_client(admin_signin_attempts=3)
    assert [sign_in(client, "wrong-token").status_code for _ in range(3)] == [401, 401, 401]
    blocked = sign_in(client, TOKEN)  # even the right token: no telling a guess came good
    assert blocked.status_code == 429
    assert "Too many failed sign-ins" in blocked.text
    assert int(blocked.headers["Retry-After"]) > 60
    assert sign_in(make_client(admin_signin_attempts=3), TOKEN, "192.0.2.2").status_code == 302
    assert sign_in(client, TOKEN, "192.0.2.2").status_code == 302
    clock[0] += 15 * 60 * 2
    assert sign_in(client, TOKEN).status_code == 302


def test_a_good_sign_in_is_not_counted(make_client):
    client = make_client(admin_signin_attempts=2)
    assert [sign_in(client, TOKEN).status_code for _ in range(5)] == [302] * 5


def test_the_limiter_keeps_two_counters_per_key_and_forgets_idle_ones():
    limit = RateLimit(window=60)
    assert [limit.wait("k", 2, 30.0) for _ in range(3)] == [0.0, 0.0, 30.0]
    assert limit.wait("k", 2, 61.0) == 0.0  # the last window's 2, weighted 59/60, + 0 < 2
    assert limit.wait("k", 2, 62.0) == pytest.approx(28.0)  # 2 * 58/60 + 1: until 2 * 30/60
    assert limit.wait("k", 2, 90.5) == 0.0
    assert limit.wait("peek", 1, 80.0, count=False) == 0.0
    assert limit.wait("peek", 1, 80.0) == 0.0  # peeking did not count
    for i in range(MAX_ADDRESSES):
        limit.wait(i, 5, 200.0)
    limit.wait("new", 5, 330.0)  # full: everything idle for a whole window is dropped
    assert len(limit._hits) == 1


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"INGEST_RATE_LIMIT_PER_IP": "lots"}, "INGEST_RATE_LIMIT_PER_IP: expected an integer"),
        ({"INGEST_RATE_LIMIT_PER_ROUTE": "-1"}, "INGEST_RATE_LIMIT_PER_ROUTE: expected 0.."),
        ({"ADMIN_SIGNIN_ATTEMPTS": "0"}, "ADMIN_SIGNIN_ATTEMPTS: expected 1..10000"),
        ({"TRUST_X_FORWARDED_FOR": "maybe"}, "TRUST_X_FORWARDED_FOR: expected true or false"),
        ({"REQUEST_READ_TIMEOUT": "0"}, "REQUEST_READ_TIMEOUT: expected a number"),
    ],
)
def test_limit_settings_are_checked(env, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Config.from_env(env)


def test_limit_settings_from_the_environment():
    config = Config.from_env(
        {
            "INGEST_RATE_LIMIT_PER_IP": "600",
            "INGEST_RATE_LIMIT_PER_ROUTE": "6000",
            "TRUST_X_FORWARDED_FOR": "true",
            "ADMIN_SIGNIN_ATTEMPTS": "5",
            "REQUEST_READ_TIMEOUT": "5",
        }
    )
    assert (config.ingest_rate_limit_per_ip, config.ingest_rate_limit_per_route) == (600, 6000)
    assert config.trust_x_forwarded_for and config.admin_signin_attempts == 5
    assert config.request_read_timeout == 5.0
