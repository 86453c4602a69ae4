"""Is this delivery really from its sender? One module per signature scheme.

Every scheme is a function `verify_<scheme>(delivery, spec)` that returns quietly or
raises `Rejected` with a reason for the log (never for the sender: it gets a bare 401).
`spec` is the route's `verify:` block as the mapping loader validated it, secrets
already read from the environment. `verify(spec, delivery)` picks the function.

    verify({"scheme": "stripe", "secrets": [...], "tolerance": 300}, delivery)

Failed verifications are counted per route for metrics: `failures()`.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from relay.ingest.verify import calendly, hmac_body, paddle, paypal, standard, stripe, token
from relay.ingest.verify.base import Delivery, Ping, Rejected, Unavailable

__all__ = [
    "Delivery",
    "Ping",
    "Rejected",
    "SCHEMES",
    "Unavailable",
    "count_failure",
    "failures",
    "verify",
]

SCHEMES: dict[str, Callable[[Delivery, dict[str, Any]], None]] = {
    "stripe": stripe.verify_stripe,
    "standard-webhooks": standard.verify_standard_webhooks,
    "shopify": hmac_body.verify_shopify,
    "woocommerce": hmac_body.verify_woocommerce,
    "typeform": hmac_body.verify_typeform,
    "tally": hmac_body.verify_tally,
    "lemonsqueezy": hmac_body.verify_lemonsqueezy,
    "calendly": calendly.verify_calendly,
    "paddle": paddle.verify_paddle,
    "paypal": paypal.verify_paypal,
    "hmac": hmac_body.verify_hmac,
    "token": token.verify_token,
    "basic": token.verify_basic,
}

_failures: Counter[str] = Counter()
_lock = threading.Lock()


def verify(spec: str | dict[str, Any], delivery: Delivery) -> None:
    """Return if `delivery` passes the route's `verify:`; raise `Rejected` (or `Ping`) if not,
    `Unavailable` if it cannot be checked now."""
    if spec == "none":
        return
    SCHEMES[spec["scheme"]](delivery, spec)


def count_failure(route: str) -> None:
    with _lock:
        _failures[route] += 1


def failures() -> dict[str, int]:
    """Failed verifications per route since the process started (for the metrics endpoint)."""
    with _lock:
        return dict(_failures)
