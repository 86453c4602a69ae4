"""Waking an idle dispatcher the moment a delivery is stored, without busy polling.

In one process (SQLite) the web handler sets a `threading.Event` the dispatcher waits
on. Across processes and machines (PostgreSQL) the transaction that stores deliveries
also sends `NOTIFY relay_deliveries`, delivered at commit, and each dispatcher keeps
one connection LISTENing that sets the same kind of event. Dispatchers still look for
due work every second, so a lost notification only costs that second.
"""

from __future__ import annotations

import threading

from sqlalchemy import Connection, Engine, text

from relay.logs import get_logger

CHANNEL = "relay_deliveries"
_NOTIFY = text(f"NOTIFY {CHANNEL}")
log = get_logger("relay.store")


def notify(conn: Connection) -> None:
    """Inside the storing transaction: listeners hear it once the deliveries commit."""
    if conn.dialect.name == "postgresql":
        conn.execute(_NOTIFY)


def listen(engine: Engine, wake: threading.Event, stop: threading.Event):
    """Start a thread that sets `wake` on every notification (PostgreSQL only)."""
    if engine.dialect.name != "postgresql":
        return None
    thread = threading.Thread(
        target=_listen, args=(engine, wake, stop), daemon=True, name="listener"
    )
    thread.start()
    return thread


def _listen(engine: Engine, wake: threading.Event, stop: threading.Event) -> None:
    import psycopg  # here, not at the top: a process on SQLite saves its 9 MB

    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    while not stop.is_set():
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f"LISTEN {CHANNEL}")
                wake.set()
                while not stop.is_set():
                    for _ in conn.notifies(timeout=1.0):
                        wake.set()
        except psycopg.Error as exc:
            log.warning("listen_failed", error=str(exc).splitlines()[0] if str(exc) else "")
            stop.wait(1.0)
