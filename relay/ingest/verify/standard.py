"""Standard Webhooks (and Svix): `webhook-id`, `webhook-timestamp`, `webhook-signature`.

Signed content `<id>.<timestamp>.<body>`, HMAC-SHA256 keyed with the base64 bytes after
`whsec_`. The signature header is a space-separated list of `v1,<base64>` (one per
active key); other versions (`v1a` ed25519) are skipped. Svix-branded senders use the
`svix-` names for the same headers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from relay.ingest.verify.base import Delivery, Rejected, any_equal, check_timestamp, secrets


def signing_key(secret: str) -> bytes:
    """The HMAC key in a `whsec_<base64>` secret; the mapping loader already checked it decodes."""
    return base64.b64decode(secret.removeprefix("whsec_"), validate=True)


def verify_standard_webhooks(delivery: Delivery, spec: dict[str, Any]) -> None:
    prefix = "svix-" if "svix-id" in delivery.headers else "webhook-"
    msg_id = delivery.header(prefix + "id")
    timestamp = delivery.header(prefix + "timestamp")
    header = delivery.header(prefix + "signature")
    check_timestamp(timestamp, delivery.now, spec["tolerance"])
    signatures = [
        value for version, _, value in (s.partition(",") for s in header.split()) if version == "v1"
    ]
    if not signatures:
        raise Rejected("signature header has no v1 entry")
    message = f"{msg_id}.{timestamp}.".encode() + delivery.body
    expected = [
        base64.b64encode(hmac.new(signing_key(s), message, hashlib.sha256).digest())
        for s in secrets(spec)
    ]
    if not any_equal(signatures, expected):
        raise Rejected("no signature matches")
