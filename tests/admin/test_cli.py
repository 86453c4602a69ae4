"""`python -m relay events|show|replay|retry|accounts|purge|redact|try` on the same
record the web app writes, through click's runner with the settings in the environment."""

import json
from datetime import timedelta

from click.testing import CliRunner
from sqlalchemy import update

from relay.cli import main, parse_age
from relay.store.search import get_event
from relay.store.tables import events, utcnow
from tests.admin.conftest import KEY, PASSWORD, deliver, deliver_or_die, post


def test_find_jane_see_why_fix_and_replay(cli, client, app, mappings_dir):
    jane = post(client, "jane@example.com", "o1")
    post(client, "bob@example.com", "o2", type="refund")
    deliver(app)

    listed = cli("events", "--email", "jane@example.com").output
    assert jane in listed and "failed" in listed and "bob@" not in listed

    shown = cli("show", jane).output
    assert "Custmer" in shown and "HTTP 200" in shown and "rule purchase" in shown
    assert KEY not in shown and PASSWORD not in shown

    (mappings_dir / "shop.yaml").write_text(
        (mappings_dir / "shop.yaml").read_text().replace("Custmer", "Customer")
    )
    assert f"{jane}: queued, 1 delivery" in cli("replay", jane).output
    deliver(app)
    assert json.loads(cli("show", jane, "--json").output)["status"] == "delivered"


def test_json_output_for_scripts(cli, client, app):
    ids = [post(client, id=f"o{i}", email=f"p{i}@example.com") for i in range(3)]
    page = json.loads(cli("events", "--limit", "2", "--json").output)
    assert [e["id"] for e in page["events"]] == ids[:0:-1]
    rest = json.loads(cli("events", "--cursor", page["next_cursor"], "--json").output)
    assert [e["id"] for e in rest["events"]] == ids[:1] and rest["next_cursor"] is None
    event = json.loads(cli("show", ids[0], "--json").output)
    assert event["payload"]["email"] == "p0@example.com"
    assert event["deliveries"][0]["plan"]["lead"]["email"] == "p0@example.com"
    cli("show", "ev_nope", code=1)


def test_since_and_until_select_a_time_slice(cli, client, engine):
    old, middle, new = (post(client, id=f"t{i}", email=f"t{i}@example.com") for i in range(3))
    with engine.begin() as conn:
        for event_id, hours in ((old, 5), (middle, 2)):
            conn.execute(
                update(events)
                .where(events.c.id == event_id)
                .values(received_at=utcnow() - timedelta(hours=hours))
            )
    page = json.loads(cli("events", "--since", "3h", "--until", "1h", "--json").output)
    assert [e["id"] for e in page["events"]] == [middle]
    page = json.loads(cli("events", "--until", "1h", "--json").output)
    assert [e["id"] for e in page["events"]] == [middle, old]
    assert new not in cli("events", "--until", "1h").output


def test_a_filter_that_can_match_nothing_by_its_own_terms_is_a_usage_error(cli):
    """The API refuses these with a 400; the CLI printed 'no events' and exited 0."""
    for command in ("events", "replay"):
        misspelt = cli(command, "--status", "deads", code=2).output
        assert "'deads' is not one of queued, delivered, dry_run" in misspelt
        inverted = cli(command, "--since", "1h", "--until", "2h", code=2).output
        assert "--until is as old as --since or older" in inverted


def test_replay_by_filter_and_its_refusals(cli, client, app, fake):
    ignored = post(client, id="i1", type="refund")
    dead = post(client, id="d1")
    fake.down = True
    deliver_or_die(app)
    fake.down = False
    fake.tags.add("Custmer")
    out = cli("replay", "--status", "dead", "--since", "1h", "--stored").output
    assert out.strip() == f"{dead}: queued, 1 delivery(ies)"
    deliver(app)
    assert get_event(app.extensions["relay"].engine, dead).status == "delivered"
    failed = cli("replay", ignored, "--stored", "--json", code=1)
    assert "no stored plan" in json.loads(failed.output)["results"][0]["error"]
    assert "give event ids" in cli("replay", code=2).output
    assert "give event ids" in cli("replay", ignored, "--status", "dead", code=2).output


def test_retry_dead(cli, client, app, fake, engine):
    event_id = post(client)
    fake.tags.add("Custmer")
    fake.down = True
    deliver_or_die(app)
    fake.down = False
    assert "1 delivery(ies) queued again" in cli("retry", "--since", "1h").output
    assert json.loads(cli("retry", "--json").output) == []
    deliver(app)
    assert get_event(engine, event_id).status == "delivered"


def test_accounts_pause_and_resume(cli, client, app):
    post(client)
    assert "active" in cli("accounts").output
    assert cli("accounts", "pause", "default", "--reason", "card expired").output.strip() == (
        "default: paused"
    )
    assert deliver(app) == 0
    listed = json.loads(cli("accounts", "--json").output)["accounts"]
    assert listed == [
        {
            "name": "default",
            "paused": True,
            "reason": "card expired",
            "credentials": False,
            "counts": {"pending": 1},
            "calls_today": 0,
        }
    ]
    assert "resumed" in cli("accounts", "resume", "default").output
    assert deliver(app) == 1
    assert "was not paused" in cli("accounts", "resume", "default").output
    assert "unknown account 'nosuch'" in cli("accounts", "resume", "nosuch", code=1).output
    assert "1 Kartra calls today" in cli("accounts").output


def test_purge_and_redact(cli, client, app, engine):
    old = post(client, id="old", email="old@example.com")
    deliver(app)
    with engine.begin() as conn:
        conn.execute(update(events).values(received_at=utcnow() - timedelta(days=31)))
    recent = post(client, id="new", email="jane@example.com")
    assert cli("purge", "--older-than", "30d").output.strip() == "1 event(s) purged"
    assert json.loads(cli("purge", "--older-than", "30d", "--json").output) == {"purged": 0}
    assert get_event(engine, old) is None
    refused = cli("redact", "--email", "jane@example.com", code=1)
    assert "still waiting" in refused.output
    deliver(app)
    assert cli("redact", "--email", "jane@example.com").output.strip() == (
        f"1 event(s) redacted: {recent}"
    )
    assert get_event(engine, recent).payload is None
    assert json.loads(cli("redact", recent, "--json").output) == {"redacted": [recent]}
    assert "one of the two" in cli("redact", code=2).output
    assert "no such event: ev_nope" in cli("redact", "ev_nope", recent, code=1).output
    assert "expected a number" in cli("purge", "--older-than", "soon", code=2).output


def test_ages():
    assert parse_age("90s") == timedelta(seconds=90)
    assert parse_age("2w") == timedelta(weeks=2)
    assert parse_age(" 1H ") == timedelta(hours=1)


def test_try_prints_the_call_a_payload_would_make_without_sending(cli, tmp_path):
    payload = tmp_path / "order.json"
    payload.write_text('{"id": "o1", "type": "purchase", "email": "Jane@Example.com"}')
    shown = cli("try", "shop", str(payload)).output
    assert shown.startswith(
        "status: queued (rule purchase)\n"
        "POST https://app.kartra.com/api  (account default, for a new lead)\n"
    )
    call = json.loads(shown[shown.index("{") :])
    assert (call["api_key"], call["api_password"]) == ("***", "***")
    assert call["lead"] == {"email": "jane@example.com"}
    assert call["actions"][1] == {"cmd": "assign_tag", "tag_name": "Custmer"}


def test_try_names_a_broken_headers_file(cli, tmp_path):
    payload = tmp_path / "order.json"
    payload.write_text('{"id": "o1", "type": "purchase", "email": "jane@example.com"}')
    headers = tmp_path / "order.headers.json"
    for text, says in (("{oops", "not JSON"), ('["a"]', "expected"), ("7", "expected")):
        headers.write_text(text)
        failed = cli("try", "shop", str(payload), code=1).output
        assert failed.startswith(f"kartra-relay: {headers}: ") and says in failed
        assert "Traceback" not in failed


def test_a_database_that_is_missing_unmigrated_or_not_one_is_named_in_one_line(tmp_path):
    upgrade = "run `python -m relay db upgrade` (or `make run`) first"
    missing = tmp_path / "missing.db"
    unmigrated = tmp_path / "empty.db"
    unmigrated.touch()
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"not a database" * 100)
    for database, says in (
        (missing, f"no database at {missing}: {upgrade}"),
        (unmigrated, f"the database schema is not current: {upgrade}"),
        (broken, "cannot read the database: file is not a database"),
    ):
        env = {"DATABASE_URL": f"sqlite:///{database}"}
        for command in (["events"], ["accounts"], ["show", "ev_1"]):
            done = CliRunner().invoke(main, command, env=env)
            assert (done.exit_code, done.output) == (1, f"kartra-relay: DATABASE_URL: {says}\n")
    assert not missing.exists()
    done = CliRunner().invoke(main, ["db", "upgrade"], env={"DATABASE_URL": f"sqlite:///{broken}"})
    assert done.output == (
        "kartra-relay: DATABASE_URL: cannot migrate the database: file is not a database\n"
    )


LOOKS = """
verify: none
rules:
  - name: r
    lead:
      mode: existing
      email: "{{ body.customer | lead_email }}"
    actions:
      - cmd: assign_tag
        tag_name: "{{ query.source }}/{{ headers.authorization | default('no credentials') }}"
"""


def test_try_renders_as_the_server_would(cli, mappings_dir, tmp_path):
    """With the remembered customer ids, the query given, and credentials left out."""
    (mappings_dir / "looks.yaml").write_text(LOOKS)
    payload = tmp_path / "cancel.json"
    payload.write_text('{"customer": "cus_1"}')
    (tmp_path / "cancel.headers.json").write_text('{"Authorization": "Bearer s3cret"}')
    refused = cli("try", "looks", str(payload), "--query", "source=ads").output
    assert refused.endswith("lead.email: no lead identity for customer cus_1\n")
    cli("identities", "set", "looks", "cus_1", "jane@example.com")
    shown = cli("try", "looks", str(payload), "--query", "source=ads").output
    call = json.loads(shown[shown.index("{") :])
    assert call["lead"] == {"email": "jane@example.com"}
    assert call["actions"] == [{"cmd": "assign_tag", "tag_name": "ads/no credentials"}]


def test_pausing_an_account_nobody_knows_is_refused(cli):
    failed = cli("accounts", "pause", "ghost", code=1).output
    assert failed == "kartra-relay: unknown account 'ghost': not configured, and no deliveries\n"
    assert cli("accounts", "--json").output.count('"name"') == 0
