"""Schemes that sign the body alone (no timestamp), and the generic `hmac` they are made of.

Shopify, WooCommerce, Typeform, Tally and Lemon Squeezy differ only in header, encoding
and prefix, so each is a preset of `verify_hmac`. Without a signed timestamp a captured
delivery can be replayed; de-duplication on the sender's event id stops that.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Any

from relay.ingest.verify.base import (
    Delivery,
    Ping,
    Rejected,
    any_equal,
    check_timestamp,
    secrets,
)

PRESETS: dict[str, dict[str, Any]] = {
    "shopify": {"header": "X-Shopify-Hmac-Sha256", "encoding": "base64"},
    "woocommerce": {"header": "X-WC-Webhook-Signature", "encoding": "base64"},
    "typeform": {"header": "Typeform-Signature", "encoding": "base64", "prefix": "sha256="},
    "tally": {"header": "Tally-Signature", "encoding": "base64"},
    "lemonsqueezy": {"header": "X-Signature", "encoding": "hex"},
}
_WOO_PING = re.compile(rb"webhook_id=\d{1,20}")


def verify_hmac(delivery: Delivery, spec: dict[str, Any]) -> None:
    """`<prefix><hex|base64 HMAC>` in `header`; with `timestamp_header`, over `<ts>.<body>`."""
    settings = {"algorithm": "sha256", "encoding": "hex", "prefix": "", **spec}
    signature = delivery.header(settings["header"])
    prefix = settings["prefix"]
    if not signature.startswith(prefix):
        raise Rejected(f"signature does not start with {prefix!r}")
    signature = signature[len(prefix) :]
    message = delivery.body
    if settings.get("timestamp_header"):
        timestamp = delivery.header(settings["timestamp_header"])
        check_timestamp(timestamp, delivery.now, settings["tolerance"])
        message = timestamp.encode() + b"." + message
    digest = getattr(hashlib, settings["algorithm"])
    expected = [hmac.new(s.encode(), message, digest).digest() for s in secrets(spec)]
    if settings["encoding"] == "hex":
        encoded = [e.hex() for e in expected]
        signature = signature.lower()
    else:
        encoded = [base64.b64encode(e).decode() for e in expected]
    if not any_equal([signature], encoded):
        raise Rejected("no signature matches")


def _preset(name: str):
    def verify_preset(delivery: Delivery, spec: dict[str, Any]) -> None:
        verify_hmac(delivery, {**spec, **PRESETS[name]})

    verify_preset.__name__ = f"verify_{name}"
    return verify_preset


verify_shopify = _preset("shopify")
verify_typeform = _preset("typeform")
verify_tally = _preset("tally")
verify_lemonsqueezy = _preset("lemonsqueezy")
_verify_woocommerce_body = _preset("woocommerce")


def verify_woocommerce(delivery: Delivery, spec: dict[str, Any]) -> None:
    """WooCommerce signs every delivery but the unsigned `webhook_id=N` ping it sends once
    when the webhook is saved, which must get exactly 200 or the webhook is not saved."""
    if "x-wc-webhook-signature" not in delivery.headers and _WOO_PING.fullmatch(delivery.body):
        raise Ping("woocommerce webhook ping")
    _verify_woocommerce_body(delivery, spec)
