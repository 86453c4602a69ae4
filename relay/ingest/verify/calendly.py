"""Calendly v2: `Calendly-Webhook-Signature: t=<unix>,v1=<hex>`, Stripe's layout.

Calendly sends no header when the subscription has no signing key; a route that
asks for `calendly` then refuses everything, which is the safe reading of that set-up.
"""

from __future__ import annotations

from typing import Any

from relay.ingest.verify.base import Delivery
from relay.ingest.verify.stripe import timestamped_hex


def verify_calendly(delivery: Delivery, spec: dict[str, Any]) -> None:
    timestamped_hex(delivery, spec, "Calendly-Webhook-Signature")
