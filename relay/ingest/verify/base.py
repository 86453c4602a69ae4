"""What every scheme shares: the delivery it checks, its two outcomes, and small helpers."""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class Rejected(Exception):
    """The delivery is not authentic. The message is for the log only; it never names a secret."""


class Unavailable(Exception):
    """The delivery cannot be checked now (PayPal's certificate could not be downloaded):
    answer 503, and the sender tries again later. The message is for the log only."""


class Ping(Exception):
    """An unsigned set-up probe (WooCommerce's `webhook_id=N`): answer 200, store nothing."""


class CertificateSource(Protocol):
    """Where PayPal certificates come from: `paypal.Certificates`, or a test's stand-in."""

    def get(self, url: str) -> Any: ...


@dataclass(frozen=True)
class Delivery:
    """One request as a verifier sees it: the exact bytes, lower-case headers, the query.

    `now` is the clock (unix seconds), passed in so tests never wait; `certificates`
    fetches a PayPal certificate by URL (tests hand in the fixture's test certificate).
    """

    body: bytes
    headers: Mapping[str, str]
    query: Mapping[str, list[str]] = field(default_factory=dict)
    now: float = 0.0
    certificates: CertificateSource | None = None

    def header(self, name: str) -> str:
        value = self.headers.get(name.lower())
        if value is None or not value.strip():
            raise Rejected(f"header {name} missing")
        return value.strip()


def secrets(spec: Mapping) -> list[str]:
    return list(spec["secrets"])


def any_equal(candidates: Iterable[bytes | str], expected: Iterable[bytes | str]) -> bool:
    """Constant-time: every candidate is compared with every expected value, no early exit."""
    found = False
    expected = [_bytes(e) for e in expected]
    for candidate in candidates:
        for value in expected:
            found |= hmac.compare_digest(_bytes(candidate), value)
    return found


def check_timestamp(timestamp: str, now: float, tolerance: int) -> int:
    """`timestamp` as integer seconds within `tolerance` of `now`, either direction.

    ASCII digits only, and not more of them than seconds need: `str.isdigit` also
    passes digits such as "²" that `int` refuses, and `int` refuses more than 4,300
    digits; either would be a server error instead of a rejection."""
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        raise Rejected("timestamp is not integer seconds")
    value = int(timestamp)
    if abs(now - value) > tolerance:
        raise Rejected(f"timestamp outside the {tolerance} s tolerance ({int(now - value)} s old)")
    return value


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")
