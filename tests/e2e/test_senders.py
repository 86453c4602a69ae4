"""Every sender's fixture posted, signed, to the running relay with the example recipes,
delivered to the fake Kartra; and the four ways a signature fails, each a 401 that
stores nothing. Timestamped schemes are re-signed at the wall clock (the fixtures are
signed at 2026-01-01), everything else is posted byte for byte as the sender sent it."""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import time

import pytest
import requests

from tests.conftest import FIXTURES, ROOT
from tests.e2e.conftest import FakeKartra, live_env
from tests.ingest.senders import (
    EXAMPLES,
    QUERY_TOKEN,
    RECIPE_ENV,
    SECRET,
    fixture,
    resign,
)
from tests.ingest.test_recipes import EXPECTED, NO_IDENTITY

TAGS = [
    "Course 101",
    "Launch Masterclass",
    "Pro Membership",
    "Podcast Launch Checklist",
    "Email Swipe eBook",
    "Copywriting Bootcamp",
    "Launch Accelerator",
    "Funnel Templates Club",
    "Swipe File Vault",
    "Notion Content Planner",
    "Email Marketing Basics",
    "Webinar Kit",
    "Booked: 30 Minute Discovery Call",
    "Growth Plan",
    "Refunded",
    "Cancelled",
]
LISTS = [
    "Buyers",
    "Strategy Call Requests",
    "Masterclass",
    "Waitlist",
    "Webinar",
    "Coaching Applicants",
    "Discovery Calls",
    "Leads",
    "Newsletter",
]
# PayPal's certificate cannot be fetched without the network: the relay process gets the
# fixture's test certificate through a `sitecustomize` module that only tests install.
SITECUSTOMIZE = """
from cryptography import x509
from relay.ingest.verify import paypal

_CERT = x509.load_pem_x509_certificate(open({cert!r}, "rb").read())
paypal.CERTIFICATES = paypal.Certificates(fetch=lambda url: _CERT)
"""
# Refunds for a buyer the fake Kartra never saw: Kartra answers "lead not found".
UNKNOWN_BUYER = {("stripe", "charge.refunded")}


def _later(item: tuple[str, str]) -> tuple[bool, str, str]:
    """Purchases before the refunds and cancellations of the same buyers."""
    sender, name = item
    return (any(w in name.lower() for w in ("refund", "cancel", "deleted")), sender, name)


@pytest.fixture
def kartra(tmp_path):
    fake = FakeKartra(tmp_path, "--tags", ",".join(TAGS), "--lists", ",".join(LISTS))
    yield fake
    fake.process.stop()


@pytest.fixture
def recipes(tmp_path, relay_factory, kartra):
    """The relay with every example recipe, live against the fake Kartra, not started."""
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    for recipe in EXAMPLES.glob("*.yaml"):
        shutil.copy(recipe, mappings / recipe.name)
    site = tmp_path / "site"
    site.mkdir()
    cert = FIXTURES / "paypal" / "test-cert.pem"
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(cert=str(cert)))
    return relay_factory(
        MAPPINGS_DIR=str(mappings),
        PYTHONPATH=os.pathsep.join([str(ROOT), str(site)]),
        **RECIPE_ENV,
        **live_env(kartra),
    )


@pytest.fixture
def senders(recipes):
    return recipes.start()


def post(relay, sender: str, name: str, **kwargs):
    body, headers = fixture(sender, name)
    headers = resign(sender, body, headers)
    params = {"token": SECRET} if sender in QUERY_TOKEN else {}
    return relay.post(
        sender, data=body, headers=headers, params=params, allow_redirects=False, **kwargs
    )


def test_every_fixture_reaches_kartra_as_its_recipe_says(senders, kartra):
    answers = {}
    for sender, name in sorted(set(EXPECTED), key=_later):
        answer = post(senders, sender, name)
        if sender == "html-form":  # a browser form post is sent to the thank-you page
            assert answer.status_code == 303
            assert answer.headers["Location"] == "https://example.com/thank-you"
            answers[(sender, name)] = senders.events()[-1]["id"]
            continue
        assert answer.status_code == 200, (sender, name, answer.text)
        answers[(sender, name)] = answer.json()["event_id"]
    for key, event_id in answers.items():
        expected = EXPECTED[key]
        if expected == NO_IDENTITY:
            assert senders.event(event_id)["status"] == "rejected"
            continue
        if key in UNKNOWN_BUYER:
            senders.wait_for_status(event_id, "failed", timeout=30)
            continue
        event = senders.wait_for_status(event_id, "delivered", timeout=30)
        [delivery] = event["deliveries"]
        request = delivery["calls"][-1]["request"]
        sent = [(a["cmd"], a.get("tag_name") or a.get("list_name")) for a in request["actions"]]
        (mode, _), actions = expected
        if mode == "upsert":  # an existing lead is addressed by id, without a lead command
            assert sent.pop(0)[0] in ("create_lead", "edit_lead"), key
        assert sent == actions, key
    leads = {lead["email"]: lead for lead in kartra.leads()}
    assert leads["jane.doe@example.com"]["tags"] == ["Course 101"]
    assert leads["noah.kim@example.com"]["tags"] == ["Refunded"]
    assert "Buyers" in leads["noah.kim@example.com"]["lists"]


def test_a_woocommerce_ping_and_a_thrivecart_head_are_answered_and_store_nothing(senders):
    assert post(senders, "woocommerce", "ping").status_code == 200
    assert requests.head(f"{senders.url}/hooks/thrivecart", timeout=5).status_code == 200
    assert senders.events() == []


def _stripe(body: bytes, t: int, secret: str = SECRET) -> str:
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def test_bad_signatures_are_401_over_http_and_store_nothing(senders, kartra):
    body, headers = fixture("stripe", "checkout.session.completed")
    now = int(time.time())
    cases = {
        "tampered": (
            body.replace(b"4900", b"100"),
            {**headers, "Stripe-Signature": _stripe(body, now)},
        ),
        "wrong secret": (body, {**headers, "Stripe-Signature": _stripe(body, now, "whsec_other")}),
        "old timestamp": (body, {**headers, "Stripe-Signature": _stripe(body, now - 301)}),
        "missing header": (body, {"Content-Type": headers["Content-Type"]}),
    }
    for case, (data, sent_headers) in cases.items():
        answer = senders.post("stripe", data=data, headers=sent_headers)
        assert answer.status_code == 401, case
        assert answer.json() == {"error": "unauthorized"}, case
    paypal_body, paypal_headers = fixture("paypal", "CHECKOUT.ORDER.COMPLETED")
    elsewhere = {**paypal_headers, "PAYPAL-CERT-URL": "https://paypal.com.evil.example/c.pem"}
    assert senders.post("paypal", data=paypal_body, headers=elsewhere).status_code == 401
    assert senders.post("gumroad", data=b"email=a%40b.co").status_code == 401
    assert senders.events() == []
    lines = [x for x in senders.process.log_lines() if x.get("event") == "verification_failed"]
    assert len(lines) == 6
    assert SECRET not in senders.process.output()
    assert kartra.calls() == []


def test_start_up_names_a_missing_secret_and_warns_about_verify_none(senders):
    warned = [x for x in senders.process.log_lines() if x.get("event") == "route_unverified"]
    assert [x["route"] for x in warned] == ["html-form"]
    env = dict(senders.env)
    del env["STRIPE_WEBHOOK_SECRET"]
    senders.env = env
    check = senders.cli("check")
    assert check.returncode != 0
    assert "environment variable STRIPE_WEBHOOK_SECRET is not set" in check.stdout + check.stderr


@pytest.mark.parametrize("processes", ["serve", "web and worker"])
def test_a_paddle_transaction_before_its_customer_is_delivered_once_the_customer_comes(
    recipes, kartra, processes
):
    """Paddle does not keep its events in order: the transaction waits, rejected, for the
    customer.created that teaches its email, then goes out without a hand's replay, from
    the dispatcher inside `relay serve` or from the Procfile's worker process."""
    senders = recipes.start() if processes == "serve" else recipes
    if processes != "serve":
        recipes.start_web()
        worker = recipes.start_worker()
    answer = post(senders, "paddle", "transaction.completed")
    transaction = answer.json()["event_id"]
    waiting = senders.event(transaction)
    assert waiting["status"] == "rejected"
    assert waiting["awaiting_customer"] == "ctm_01jgfixturecustomer00001"

    post(senders, "paddle", "customer.created")
    event = senders.wait_for_status(transaction, "delivered", timeout=30)
    assert event["awaiting_customer"] is None
    [lead] = [lead for lead in kartra.leads() if lead["email"] == "emma.johnson@example.com"]
    assert lead["tags"] == ["Funnel Templates Club"]
    logged = (senders.process if processes == "serve" else worker).log_lines()
    [resumed] = [x for x in logged if x.get("event") == "event_resumed"]
    assert (resumed["event_id"], resumed["status"]) == (transaction, "queued")
