"""Rate limits in front of the relay: posts to the hooks per client address and per
route, a form route's own limit, and failed admin sign-ins per address.

Every limit is counted in the web process's memory (`forms.RateLimit`), before the body
is read or anything is stored, and answered `429` with `Retry-After`. With several web
processes each one counts its own share of the traffic, which still bounds a flood.

The hook limits are off by default: a payment processor sends hundreds of webhooks a
second from a few addresses on a launch day, and a refused webhook waits for the
sender's retry schedule (Stripe: up to an hour). Set them when the senders are known.
"""

from __future__ import annotations

import math
import time

from flask import current_app, jsonify, make_response, request

from relay.ingest.forms import RateLimit, client_address
from relay.logs import get_logger

SIGNIN_WINDOW = 15 * 60.0

log = get_logger("relay.ingest")


def throttle():
    """`before_request`, registered when a hook limit is set: refuse a post to
    `/hooks/...` over the per-address or per-route limit before anything else is done
    with it."""
    if request.blueprint != "ingest" or request.method != "POST":
        return None
    relay = current_app.extensions["relay"]
    config = relay.config
    route = (request.view_args or {}).get("route", "")
    limits = (
        (config.ingest_rate_limit_per_ip, ("ip", address(config.trust_x_forwarded_for))),
        (config.ingest_rate_limit_per_route if route in relay.mappings else 0, ("route", route)),
    )
    for limit, key in limits:
        if limit:
            wait = _limiter("relay.rate_limit").wait(key, limit, clock())
            if wait:
                log.info("event_refused", route=route, status=429, reason=f"{key[0]} rate limit")
                message = f"too many posts; try again in {retry_after(wait)} s"
                return with_retry_after((jsonify(error=message), 429), wait)
    return None


def form_wait(route: str, limit: int, trust_forwarded_for: bool) -> float:
    """A form route's own `rate_limit`, per (route, address): 0 or seconds to wait."""
    key = ("form", route, address(trust_forwarded_for))
    return _limiter("relay.rate_limit").wait(key, limit, clock())


def signin_wait(failed: bool = False) -> float:
    """Failed admin sign-ins from this address in the last 15 minutes: 0 while under
    ADMIN_SIGNIN_ATTEMPTS, else seconds to wait. `failed=True` counts one more."""
    config = current_app.extensions["relay"].config
    limiter = _limiter("relay.signin_limit", SIGNIN_WINDOW)
    key = address(config.trust_x_forwarded_for)
    return limiter.wait(key, config.admin_signin_attempts, clock(), count=failed)


def with_retry_after(answer, wait: float):
    """A 429 answer with its `Retry-After`; a redirect to a form's error page stays one."""
    response = make_response(answer)
    if response.status_code == 429:
        response.headers["Retry-After"] = str(retry_after(wait))
    return response


def retry_after(wait: float) -> int:
    return max(1, math.ceil(wait))


def address(trust_forwarded_for: bool) -> str:
    return client_address(request, trust_forwarded_for)


def clock() -> float:
    return current_app.extensions.get("relay.clock", time.time)()


def _limiter(name: str, window: float | None = None) -> RateLimit:
    extensions = current_app.extensions
    if name not in extensions:
        extensions.setdefault(name, RateLimit() if window is None else RateLimit(window))
    return extensions[name]
