"""The sender fixtures as requests, and the environment the example recipes need.

Shared by the recipe tests and the end-to-end sender tests. Every fixture folder in
../shared/sources/fixtures/ has the recipe of the same name in mappings/examples/.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from relay.ingest.verify.standard import signing_key
from tests.conftest import FIXTURES, ROOT

EXAMPLES = ROOT / "mappings" / "examples"
SECRET = "whsec_test_secret"
TOKEN_QUERY = {"token": SECRET}
SW_SECRET = "whsec_eiAOuJrbCQT9W8WsTKxPlSiwrHvwPLwqoVCMJrBVd28="
PAYPAL_WEBHOOK_ID = "8PT597110X687430LFIXTURE"
SIGNED_AT = 1767225600

# The env var each recipe names, set to the secret its fixtures were signed with.
RECIPE_ENV = {
    "STRIPE_WEBHOOK_SECRET": SECRET,
    "PAYPAL_WEBHOOK_ID": PAYPAL_WEBHOOK_ID,
    "PAYPAL_IPN_TOKEN": SECRET,
    "SHOPIFY_WEBHOOK_SECRET": SECRET,
    "WOOCOMMERCE_WEBHOOK_SECRET": SECRET,
    "TYPEFORM_WEBHOOK_SECRET": SECRET,
    "JOTFORM_TOKEN": SECRET,
    "TALLY_SIGNING_SECRET": SECRET,
    "GOOGLE_FORMS_TOKEN": SECRET,
    "GUMROAD_TOKEN": SECRET,
    "CALENDLY_SIGNING_KEY": SECRET,
    "THRIVECART_SECRET": SECRET,
    "SAMCART_TOKEN": SECRET,
    "PADDLE_WEBHOOK_SECRET": SECRET,
    "LEMONSQUEEZY_SIGNING_SECRET": SECRET,
    "GRAVITY_FORMS_TOKEN": SECRET,
    "STANDARD_WEBHOOKS_SECRET": SW_SECRET,
}
# Recipes whose secret travels in the URL query.
QUERY_TOKEN = {"paypal-ipn", "jotform", "google-forms", "gumroad", "samcart"}


def fixture(sender: str, name: str) -> tuple[bytes, dict[str, str]]:
    """The exact body bytes and the headers of one fixture delivery."""
    folder = FIXTURES / sender
    headers_file = folder / f"{name}.headers.json"
    body_file = next(p for p in folder.glob(f"{name}.*") if p != headers_file)
    return body_file.read_bytes(), json.loads(headers_file.read_text())


def fixtures() -> list[tuple[str, str]]:
    """(sender, fixture name) for every fixture delivery."""
    return sorted(
        (h.parent.name, h.name.removesuffix(".headers.json"))
        for h in FIXTURES.glob("*/*.headers.json")
    )


def resign(sender: str, body: bytes, headers: dict[str, str], now: int | None = None) -> dict:
    """The headers re-signed at `now` (default: the wall clock) for the timestamped schemes,
    so a fixture signed in the past can be posted to a running relay."""
    now = int(time.time()) if now is None else now
    headers = dict(headers)
    if sender in ("stripe", "calendly"):
        name = "Stripe-Signature" if sender == "stripe" else "Calendly-Webhook-Signature"
        digest = _hex(SECRET.encode(), f"{now}.".encode() + body)
        headers[name] = f"t={now},v1={digest}"
    elif sender == "paddle":
        headers["Paddle-Signature"] = (
            f"ts={now};h1={_hex(SECRET.encode(), f'{now}:'.encode() + body)}"
        )
    elif sender == "standard-webhooks":
        prefix = "svix-" if "svix-id" in headers else "webhook-"
        message = f"{headers[prefix + 'id']}.{now}.".encode() + body
        signature = base64.b64encode(
            hmac.new(signing_key(SW_SECRET), message, hashlib.sha256).digest()
        ).decode()
        headers[prefix + "timestamp"] = str(now)
        headers[prefix + "signature"] = f"v1,{signature}"
    return headers


def _hex(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()
