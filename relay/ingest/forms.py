"""What browser-facing routes need: the client's address, a per-address rate limit, an
Origin check, CORS.

A public form cannot authenticate its posts, so what stops a script from filling the
relay (and the Kartra account) with junk is a limit of posts per minute per client
address. The limit is kept in this process's memory: with several web processes each
enforces it on its own share of the traffic, which still bounds a flood.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from urllib.parse import urlsplit

from werkzeug.wrappers import Request

from relay.mapping import Form

WINDOW = 60.0
MAX_ADDRESSES = 100_000


def client_address(request: Request, trust_forwarded_for: bool) -> str:
    """The poster's address. Behind a proxy you trust (Heroku's router), the last
    `X-Forwarded-For` entry is the one that proxy appended: the earlier ones are
    whatever the client claimed, so they are never used."""
    if trust_forwarded_for:
        forwarded = [a.strip() for a in request.headers.get("X-Forwarded-For", "").split(",")]
        if forwarded[-1]:
            return forwarded[-1]
    return request.remote_addr or "unknown"


class RateLimit:
    """At most about `limit` hits per `window` seconds per key; the clock is passed in.

    A sliding window estimated from two counters per key (this window's hits and the
    last one's, weighted by how much of it still overlaps): constant memory per key,
    however high the limit, and at most MAX_ADDRESSES keys.
    """

    def __init__(self, window: float = WINDOW) -> None:
        self.window = window
        self._hits: dict[Hashable, tuple[int, int, int]] = {}  # key: (window, last's, this)
        self._lock = threading.Lock()

    def wait(self, key: Hashable, limit: int, now: float, *, count: bool = True) -> float:
        """0 when one more hit fits (and, with `count`, counts it); else the seconds
        until one would."""
        index, into = divmod(now, self.window)
        index = int(index)
        with self._lock:
            if len(self._hits) >= MAX_ADDRESSES:
                self._forget(index)
            slot, previous, current = self._hits.get(key, (index, 0, 0))
            if slot < index:
                previous, current = (current if slot == index - 1 else 0), 0
            if previous * (1 - into / self.window) + current < limit:
                if count:
                    self._hits[key] = (index, previous, current + 1)
                return 0.0
        if current >= limit:
            return self.window - into
        return max(self.window * (1 - (limit - current) / previous) - into, 0.001)

    def _forget(self, index: int) -> None:
        """Drop keys idle for a whole window; if all are busy, start over (fail open
        rather than grow without bound)."""
        for key in [key for key, (slot, _, _) in self._hits.items() if slot < index - 1]:
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
        origin = f"{referer.scheme}://{referer.netloc}".lower()
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
