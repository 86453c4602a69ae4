"""Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]`, HMAC-SHA256 over `<t>.<body>`.

The key is the endpoint secret as UTF-8 text, `whsec_` prefix included (stripe-python
`_webhook.py`). During a secret roll Stripe sends one `v1` per active secret; `v0`
(test mode) entries are ignored. Any `v1` matching any configured secret passes.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from relay.ingest.verify.base import Delivery, Rejected, any_equal, check_timestamp, secrets


def parse_t_v1(header: str, separator: str = ",", ts_key: str = "t", sig_key: str = "v1"):
    """`t=1,v1=a,v1=b` -> ("1", ["a", "b"]); shared by Stripe, Calendly and Paddle."""
    timestamp, signatures = None, []
    for item in header.split(separator):
        key, _, value = item.strip().partition("=")
        if key == ts_key:
            timestamp = value
        elif key == sig_key and value:
            signatures.append(value)
    if timestamp is None:
        raise Rejected(f"signature header has no {ts_key}=")
    if not signatures:
        raise Rejected(f"signature header has no {sig_key}=")
    return timestamp, signatures


def timestamped_hex(delivery: Delivery, spec: dict[str, Any], header: str, **parse) -> None:
    timestamp, signatures = parse_t_v1(delivery.header(header), **parse)
    check_timestamp(timestamp, delivery.now, spec["tolerance"])
    joiner = b":" if parse.get("separator") == ";" else b"."
    message = timestamp.encode() + joiner + delivery.body
    expected = [
        hmac.new(secret.encode(), message, hashlib.sha256).hexdigest() for secret in secrets(spec)
    ]
    if not any_equal(signatures, expected):
        raise Rejected("no signature matches")


def verify_stripe(delivery: Delivery, spec: dict[str, Any]) -> None:
    timestamped_hex(delivery, spec, "Stripe-Signature")
