"""Engine creation and migrations.

SQLite is tuned for one writer and many readers (WAL, synchronous=NORMAL, a busy
timeout long enough for the dispatcher and the web threads to take turns).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError

MIGRATIONS = Path(__file__).with_name("migrations")


def connect(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _tune_sqlite)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def _tune_sqlite(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _alembic_config(engine: Engine) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision`; safe to run on every release."""
    config = _alembic_config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def wait_for_schema(engine: Engine, *, timeout: float = 60.0, pause: float = 1.0) -> bool:
    """`schema_is_current`, retrying while the database cannot be reached: a worker that
    boots while PostgreSQL restarts (or before its add-on is up) waits instead of dying."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return schema_is_current(engine)
        except OperationalError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(pause)


def schema_is_current(engine: Engine) -> bool:
    head = ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision() == head


def upsert(conn, table: Table, values: dict) -> None:
    """Insert a row, or update it when its primary key exists: atomic on both engines,
    so two workers learning the same thing at once cannot collide."""
    conn.execute(_upsert_statement(conn.dialect.name, table, tuple(values)), values)


@functools.cache
def _upsert_statement(dialect: str, table: Table, columns: tuple[str, ...]):
    """Built once per table and set of columns: building it is most of an upsert's cost
    (the ingest path runs one per event that teaches an identity)."""
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    keys = [c.name for c in table.primary_key]
    statement = insert(table)
    return statement.on_conflict_do_update(
        index_elements=keys,
        set_={k: statement.excluded[k] for k in columns if k not in keys},
    )
