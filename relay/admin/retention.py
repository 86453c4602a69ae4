"""Retention: events older than `RETENTION_DAYS` are purged by the dispatcher process,
on a schedule, so the record does not grow without bound (and personal data does not
stay longer than it is useful). `RETENTION_DAYS=0` keeps everything.

A thread beside the dispatcher rather than a step of its loop: a purge of a large
backlog runs in batches for a while and must never delay a delivery.
"""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import Engine

from relay.logs import get_logger
from relay.store.maintenance import purge_older_than
from relay.store.tables import utcnow

log = get_logger("relay.retention")

EVERY = timedelta(hours=1)
FIRST_AFTER = timedelta(minutes=1)


class Retention:
    def __init__(
        self,
        engine: Engine,
        days: int,
        *,
        every: timedelta = EVERY,
        first_after: timedelta = FIRST_AFTER,
    ):
        self.engine = engine
        self.days = days
        self.every = every
        self.first_after = first_after
        self.stop = threading.Event()

    def run(self) -> None:
        """Purge shortly after start, then every `every`, until `stop` is set."""
        wait = self.first_after
        while not self.stop.wait(wait.total_seconds()):
            self.purge_once()
            wait = self.every

    def purge_once(self) -> int:
        try:
            purged = purge_older_than(self.engine, utcnow() - timedelta(days=self.days))
        except Exception:
            log.exception("retention_failed")
            return 0
        if purged:
            log.info("retention_purged", events=purged, older_than_days=self.days)
        return purged

    def start(self) -> threading.Thread | None:
        """A daemon thread, or None when retention is off (0 days)."""
        if not self.days:
            return None
        thread = threading.Thread(target=self.run, name="retention", daemon=True)
        thread.start()
        return thread
