"""Paddle Billing: `Paddle-Signature: ts=<unix>;h1=<hex>[;h1=...]`, HMAC over `<ts>:<body>`.

The key is the destination's secret string as-is. Paddle's SDKs allow only 5 s of
clock skew; the relay uses the route's tolerance (300 s by default) like the others.
"""

from __future__ import annotations

from typing import Any

from relay.ingest.verify.base import Delivery
from relay.ingest.verify.stripe import timestamped_hex


def verify_paddle(delivery: Delivery, spec: dict[str, Any]) -> None:
    timestamped_hex(delivery, spec, "Paddle-Signature", separator=";", ts_key="ts", sig_key="h1")
