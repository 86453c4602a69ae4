"""Dashboard sessions ended by signing out.

A session is a signed cookie (relay/admin/dashboard.py) holding a random id. Signing out
records the id's SHA-256 until the cookie would have expired anyway, so a copy of the
cookie taken before stops working everywhere; the record then has nothing left to
guard and goes with the next sign-out.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import Engine, delete, select

from relay.store.db import upsert
from relay.store.tables import signed_out, utcnow


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def end(engine: Engine, session_id: str, until: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(delete(signed_out).where(signed_out.c.until < utcnow()))
        upsert(conn, signed_out, {"session_hash": _hash(session_id), "until": until})


def ended(engine: Engine, session_id: str) -> bool:
    with engine.connect() as conn:
        found = conn.execute(
            select(signed_out.c.session_hash).where(signed_out.c.session_hash == _hash(session_id))
        ).first()
    return found is not None
