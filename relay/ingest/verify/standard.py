"""Standard Webhooks (and Svix): `webhook-id`, `webhook-timestamp`, `webhook-signature`.

Signed content `<id>.<timestamp>.<body>`. A `whsec_<base64>` secret is an HMAC-SHA256
key, checked against the header's `v1,<base64>` entries; a `whpk_<base64>` secret is the
sender's ed25519 public key, checked against its `v1a,<base64>` entries. The header is a
space-separated list (one entry per active key); other versions are skipped. A route may
list both kinds of secret while a sender moves from one to the other. Svix-branded
senders use the `svix-` names for the same headers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import TYPE_CHECKING, Any

from relay.ingest.verify.base import Delivery, Rejected, any_equal, check_timestamp, secrets

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

PUBLIC_KEY_PREFIX = "whpk_"


def signing_key(secret: str) -> bytes:
    """The HMAC key in a `whsec_<base64>` secret; the mapping loader already checked it decodes."""
    return base64.b64decode(secret.removeprefix("whsec_"), validate=True)


def public_key(secret: str) -> Ed25519PublicKey:
    """The ed25519 key in a `whpk_<base64>` secret; the mapping loader already checked it.
    cryptography is imported only for such a key: it costs every process 6 MB."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    raw = base64.b64decode(secret.removeprefix(PUBLIC_KEY_PREFIX), validate=True)
    return Ed25519PublicKey.from_public_bytes(raw)


def verify_standard_webhooks(delivery: Delivery, spec: dict[str, Any]) -> None:
    prefix = "svix-" if "svix-id" in delivery.headers else "webhook-"
    msg_id = delivery.header(prefix + "id")
    timestamp = delivery.header(prefix + "timestamp")
    header = delivery.header(prefix + "signature")
    check_timestamp(timestamp, delivery.now, spec["tolerance"])
    entries = [s.partition(",") for s in header.split()]
    message = f"{msg_id}.{timestamp}.".encode() + delivery.body
    keys = secrets(spec)
    hmac_keys = [k for k in keys if not k.startswith(PUBLIC_KEY_PREFIX)]
    public_keys = [k for k in keys if k.startswith(PUBLIC_KEY_PREFIX)]
    signatures = [value for version, _, value in entries if version == "v1"]
    asymmetric = [value for version, _, value in entries if version == "v1a"]
    if not (signatures and hmac_keys) and not (asymmetric and public_keys):
        raise Rejected("signature header has no entry for the configured keys (v1 or v1a)")
    expected = [
        base64.b64encode(hmac.new(signing_key(s), message, hashlib.sha256).digest())
        for s in hmac_keys
    ]
    matched = any_equal(signatures, expected)
    matched |= any(_signed(k, value, message) for k in public_keys for value in asymmetric)
    if not matched:
        raise Rejected("no signature matches")


def _signed(key: str, signature: str, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        public_key(key).verify(base64.b64decode(signature, validate=True), message)
    except (InvalidSignature, ValueError):
        return False
    return True
