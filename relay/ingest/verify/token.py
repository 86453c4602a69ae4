"""Senders that sign nothing: a shared secret in a header, the query or a body field; HTTP Basic.

Gumroad, ThriveCart, Jotform, Google Forms, SamCart, Gravity Forms and PayPal IPN can
only prove themselves by knowing a secret. Every comparison is constant-time, and a
secret given twice (`?token=a&token=b`) is refused rather than guessed at.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qs, unquote_plus

from relay.ingest.verify.base import Delivery, Rejected, any_equal, secrets


def verify_token(delivery: Delivery, spec: dict[str, Any]) -> None:
    if "header" in spec:
        given = [delivery.header(spec["header"])]
        where = f"header {spec['header']}"
    elif "query" in spec:
        given = list(delivery.query.get(spec["query"], []))
        where = f"query parameter {spec['query']}"
    else:
        given = _body_field(delivery.body, spec["field"])
        where = f"body field {spec['field']}"
    if not given:
        raise Rejected(f"{where} missing")
    if len(given) > 1:
        raise Rejected(f"{where} given {len(given)} times")
    if not any_equal(given, secrets(spec)):
        raise Rejected(f"{where} does not match")


def _body_field(body: bytes, name: str) -> list[str]:
    """The field's values in a form-encoded body (ThriveCart's `thrivecart_secret`)."""
    try:
        fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    except ValueError:
        return []
    return fields.get(name, [])


def without_field(body: bytes, name: str) -> bytes:
    """The form body without field `name`, the others byte for byte as sent: a token that
    travels in the body must not be stored with the raw request."""
    kept = [
        part
        for part in body.split(b"&")
        if unquote_plus(part.partition(b"=")[0].decode("utf-8", "replace")) != name
    ]
    return b"&".join(kept)


def verify_basic(delivery: Delivery, spec: dict[str, Any]) -> None:
    """`Authorization: Basic base64(user:password)`; Gumroad sends it for `https://user:pw@host`."""
    scheme, _, credentials = delivery.header("Authorization").partition(" ")
    if scheme.lower() != "basic":
        raise Rejected("Authorization is not Basic")
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, UnicodeDecodeError, a character beyond ASCII
        raise Rejected("Authorization is not valid base64") from None
    username, _, password = decoded.partition(":")
    user_ok = any_equal([username], [spec["username"]])
    if not (any_equal([password], secrets(spec)) & user_ok):
        raise Rejected("Basic credentials do not match")
