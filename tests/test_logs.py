"""Secrets never reach a log line, whichever code logs them by mistake."""

import json

from relay.config import Account, Config
from relay.logs import get_logger, mask_email, mask_emails_in
from relay.web import create_app

STRIPE = """
verify: {scheme: stripe, secret: "${SHOP_STRIPE_SECRET}"}
rules:
  - name: r
    lead: {email: "{{ body.email }}"}
    actions: [{cmd: assign_tag, tag_name: T}]
"""


def test_every_configured_secret_is_redacted(tmp_path, monkeypatch, capsys, engine):
    monkeypatch.setenv("SHOP_STRIPE_SECRET", "whsec_route-SECRET-991")
    (tmp_path / "shop.yaml").write_text(STRIPE)
    config = Config(
        database_url=str(engine.url),
        mappings_dir=tmp_path,
        kartra_app_id="app",
        admin_token="admin-token-SECRET-0123",
        accounts={"default": Account("default", "key-SECRET-1", "pw SECRET&2")},
    )
    create_app(config, engine)
    capsys.readouterr()
    get_logger("test").error(
        "oops",
        detail={"leak": ["key-SECRET-1 pw SECRET&2"]},
        also="whsec_route-SECRET-991 admin-token-SECRET-0123",
        echoed="api_password=pw+SECRET%262 / pw%20SECRET%262 / pw SECRET&amp;2",
    )
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["detail"] == {"leak": ["*** ***"]}
    assert line["also"] == "*** ***"
    assert line["echoed"] == "api_password=*** / *** / ***"


def test_mask_email():
    assert mask_email("jane.doe@example.com") == "j***@example.com"
    assert mask_email("") == ""
    assert mask_email(None) is None


def test_log_lines_follow_the_current_stdout(monkeypatch):
    """A dispatcher thread that outlives one test's captured stdout must not die on the
    next line it logs: lines go to whatever sys.stdout is at the time."""
    import io
    import sys

    from relay import logs

    logs.configure("info")
    log = get_logger("test")
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", first)
    log.info("one")
    first.close()
    monkeypatch.setattr(sys, "stdout", second)
    log.info("two")
    assert json.loads(second.getvalue())["event"] == "two"


def test_a_logger_follows_a_later_configuration(capsys):
    """A logger is built once per configuration, not once for ever: the level and the
    secrets configured after its first line hold for its next ones."""
    from relay import logs

    logs.configure("info")
    log = get_logger("test")
    log.info("before", token="tok-SECRET-1")
    logs.configure("warning", ["tok-SECRET-1"])
    log.info("filtered")
    log.warning("after", token="tok-SECRET-1")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(x["event"], x["token"]) for x in lines] == [
        ("before", "tok-SECRET-1"),
        ("after", "***"),
    ]
    logs.configure("info")


def test_capture_logs_sees_a_logger_built_before_it(capsys):
    from structlog.testing import capture_logs

    from relay import logs

    logs.configure("info")
    log = get_logger("test")
    log.info("outside")
    with capture_logs() as captured:
        log.info("inside", n=1)
    log.info("outside again")
    assert captured == [{"event": "inside", "n": 1, "log_level": "info"}]
    assert [json.loads(x)["event"] for x in capsys.readouterr().out.splitlines()] == [
        "outside",
        "outside again",
    ]


def test_addresses_quoted_in_a_reason_are_masked():
    assert (
        mask_emails_in("rule 'signup': lead.email 'jane.doe@gmail' is not an email address")
        == "rule 'signup': lead.email 'j***@gmail' is not an email address"
    )
    assert mask_emails_in("no rule matched") == "no rule matched"
    assert mask_emails_in(None) is None
