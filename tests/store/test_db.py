import sqlite3
import threading
import time
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import insert, select
from sqlalchemy.exc import OperationalError

from relay.cli import main
from relay.store import connect, db, migrate, store_event, wait_for_schema
from relay.store.db import insert_rows, write_transaction
from relay.store.tables import events, utcnow
from tests.conftest import downgrade
from tests.postgres import _free_port
from tests.store.test_queue import new_event, plan


def test_wait_for_schema_answers_once_reachable(engine):
    assert wait_for_schema(engine, timeout=1) is True


def test_wait_for_schema_gives_up_on_an_unreachable_database():
    engine = connect(f"postgresql+psycopg://nobody@127.0.0.1:{_free_port()}/none")
    with pytest.raises(OperationalError):
        wait_for_schema(engine, timeout=0.3, pause=0.1)
    engine.dispose()


def test_an_unmigrated_database_is_not_current(tmp_path):
    engine = connect(f"sqlite:///{tmp_path}/empty.db")
    assert wait_for_schema(engine, timeout=1) is False
    engine.dispose()


def test_insert_rows_stores_what_sqlalchemy_stores(engine):
    """The driver-SQL insert of the ingest path and SQLAlchemy's own insert leave the same
    values in the database (compared as the driver reads them back: on SQLite, the very
    text of JSON and of datetimes, which queries compare as text)."""
    now = utcnow()
    row = {
        "route": "shop",
        "received_at": now,
        "content_type": None,
        "headers": {"stripe-signature": "t=1,v1=ab", "ünïcode": "é"},
        "query": {},
        "body": b"\x00{}\xff",
        "payload": {"n": 1.5, "list": [None, True, "x"], "nested": {"a": []}},
        "status": "queued",
        "rule": None,
        "reason": "a 'quoted' reason",
    }
    with engine.begin() as conn:
        conn.execute(insert(events), [{**row, "id": "ev_sqlalchemy", "dedupe_key": "a"}])
        insert_rows(conn, events, [{**row, "id": "ev_driver", "dedupe_key": "b"}])
        names = ", ".join(f'"{name}"' for name in row)
        stored = conn.exec_driver_sql(f"SELECT {names} FROM events ORDER BY dedupe_key").all()
    assert len(stored) == 2 and stored[0] == stored[1]


def test_insert_rows_binds_a_value_shared_by_rows_once_and_right(engine):
    """A group's rows share one `now`: it is processed once, and each row still gets its
    own values (another time, other JSON) where they differ."""
    now, later = utcnow(), utcnow() + timedelta(seconds=1)
    shared = {"k": "v"}
    rows = [
        {
            "id": f"ev_{n}",
            "route": "shop",
            "received_at": at,
            "dedupe_key": str(n),
            "content_type": None,
            "headers": headers,
            "query": {},
            "body": b"{}",
            "payload": {"n": n},
            "status": "queued",
            "rule": None,
            "reason": None,
        }
        for n, at, headers in [(1, now, shared), (2, later, shared), (3, now, {"k": "w"})]
    ]
    with engine.begin() as conn:
        assert insert_rows(conn, events, rows).rowcount == 3
        stored = conn.execute(
            select(events.c.received_at, events.c.headers, events.c.payload).order_by(events.c.id)
        ).all()
    assert stored == [
        (now, {"k": "v"}, {"n": 1}),
        (later, {"k": "v"}, {"n": 2}),
        (now, {"k": "w"}, {"n": 3}),
    ]


def _hold_write_lock(path: str, seconds: float, released: list) -> threading.Thread:
    """Another process's writer: takes the database's write lock, keeps it `seconds`,
    commits, and notes when."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")

    def hold():
        time.sleep(seconds)
        holder.execute("COMMIT")
        released.append(time.perf_counter())
        holder.close()

    return threading.Thread(target=hold)


def test_an_event_is_stored_soon_after_the_sqlite_write_lock_is_free(tmp_path):
    # SQLite's busy handler would try again 78 ms after the first try, 18 ms after the
    # lock is free at 60 ms; the storing thread tries every fraction of a millisecond.
    path = str(tmp_path / "relay.db")
    engine = connect(f"sqlite:///{path}")
    migrate(engine)
    released: list[float] = []
    holding = _hold_write_lock(path, 0.06, released)
    holding.start()
    stored = store_event(engine, new_event(plan()))
    committed = time.perf_counter()
    holding.join(5)
    assert stored.created
    assert 0 <= committed - released[0] < 0.01
    engine.dispose()


def test_a_writer_gives_up_on_the_sqlite_write_lock_after_the_busy_timeout(tmp_path, monkeypatch):
    path = str(tmp_path / "relay.db")
    engine = connect(f"sqlite:///{path}")
    migrate(engine)
    monkeypatch.setattr(db, "BUSY_TIMEOUT", 0.1)
    released: list[float] = []
    holding = _hold_write_lock(path, 0.5, released)
    holding.start()
    started = time.monotonic()
    with pytest.raises(OperationalError, match="database is locked"), write_transaction(engine):
        pass
    assert 0.1 <= time.monotonic() - started < 0.4
    holding.join(5)
    # the connection goes back to the pool with SQLite's own busy handler again
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 100
    engine.dispose()


def test_db_upgrade_takes_a_url_with_a_percent_sign(database_url, tmp_path):
    """A percent-encoded password (`p%40ss` for p@ss) or a `%` in a SQLite path: Alembic
    reads its options as ConfigParser values, where `%` is an error quoting the URL."""
    if database_url.startswith("sqlite"):
        folder = tmp_path / "100%"
        folder.mkdir()
        url = f"sqlite:///{folder / 'relay.db'}"
    else:
        url = database_url.replace("://relay@", "://relay:s3cret%40pw@")  # trust auth
    done = CliRunner().invoke(main, ["db", "upgrade"], env={"DATABASE_URL": url})
    assert done.exit_code == 0, done.output
    assert "s3cret" not in done.output
    engine = connect(url)
    assert wait_for_schema(engine, timeout=1) is True
    engine.dispose()


def test_the_newest_migrations_go_down_and_up_again_keeping_the_events(engine):
    """An operator rolling a release back runs the downgrade: the events stored meanwhile
    stay, and upgrading again gives the current schema."""
    store_event(engine, new_event(key="id:kept"))
    downgrade(engine, "0006")
    assert db.schema_is_current(engine) is False
    migrate(engine)
    assert db.schema_is_current(engine) is True
    with engine.connect() as conn:
        assert conn.execute(select(events.c.dedupe_key)).scalars().all() == ["id:kept"]
