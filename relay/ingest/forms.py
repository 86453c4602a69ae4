"""What browser-facing routes need: the client's address, a per-address rate limit, an
Origin check, CORS.

A public form cannot authenticate its posts, so what stops a script from filling the
relay (and the Kartra account) with junk is a limit of posts per minute per client
address. The limit is kept in this process's memory: with several web processes each
enforces it on its own share of the traffic, which still bounds a flood.
"""

from __future__ import annotations

import threading
from collections import deque
from urllib.parse import urlsplit

from werkzeug.wrappers import Request

from relay.mapping import Form

WINDOW = 60.0
MAX_ADDRESSES = 100_000


def client_address(request: Request, form: Form) -> str:
    """The poster's address. Behind a proxy you trust (Heroku's router), the last
    `X-Forwarded-For` entry is the one that proxy appended: the earlier ones are
    whatever the client claimed, so they are never used."""
    if form.trust_forwarded_for:
        forwarded = [a.strip() for a in request.headers.get("X-Forwarded-For", "").split(",")]
        if forwarded[-1]:
            return forwarded[-1]
    return request.remote_addr or "unknown"


class RateLimit:
    """At most `limit` posts per `WINDOW` seconds per (route, address); the clock is passed in."""

    def __init__(self) -> None:
        self._hits: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, route: str, address: str, limit: int, now: float) -> bool:
        with self._lock:
            if len(self._hits) >= MAX_ADDRESSES:
                self._forget(now)
            hits = self._hits.setdefault((route, address), deque())
            while hits and hits[0] <= now - WINDOW:
                hits.popleft()
            if len(hits) >= limit:
                return False
            hits.append(now)
            return True

    def _forget(self, now: float) -> None:
        """Drop addresses idle for a whole window; if all are busy, start over (fail open
        rather than grow without bound)."""
        idle = [key for key, hits in self._hits.items() if not hits or hits[-1] <= now - WINDOW]
        for key in idle:
            del self._hits[key]
        if len(self._hits) >= MAX_ADDRESSES:
            self._hits.clear()


def foreign_origin(form: Form | None, request: Request) -> str | None:
    """The site a browser says this post comes from, when the route names its sites and
    this is not one of them: another site's page posting through its visitors' browsers.
    `Origin` first, else the origin of `Referer`; a post with neither (a server, a
    script) is not a browser's and passes."""
    if form is None or not form.origins:
        return None
    origin = request.headers.get("Origin")
    if origin is None:
        referer = urlsplit(request.headers.get("Referer", ""))
        if not (referer.scheme and referer.netloc):
            return None
        origin = f"{referer.scheme}://{referer.netloc}"
    return None if origin in form.origins else origin


def cors_headers(form: Form | None, origin: str | None) -> dict[str, str]:
    """The CORS answer for a `fetch()` from `origin`: empty unless the route allows it."""
    if form is None or not origin or origin not in form.origins:
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": "POST",
        "Access-Control-Allow-Headers": "Content-Type",
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }
