"""Engine creation and migrations.

SQLite is tuned for one writer and many readers (WAL, synchronous=NORMAL, a busy
timeout long enough for the dispatcher and the web threads to take turns); the ingest
takes the write lock as soon as it is free (`write_transaction`).

Alembic is imported only to migrate: with Mako it costs about 8 MB in every process
that imports it, and the web and worker processes only ask whether the schema is
current, which needs the version table and the migration files' revisions, no more.
"""

from __future__ import annotations

import ast
import functools
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, CursorResult, Engine, Table, create_engine, event, inspect, text
from sqlalchemy.exc import OperationalError

MIGRATIONS = Path(__file__).with_name("migrations")
# How long a SQLite writer waits for the write lock. SQLite's own busy handler sleeps 1,
# 2, 5, 10, 15, 20, 25... ms between tries, so a writer may wake long after the lock is
# free, and meanwhile another process takes it again; the ingest's writer
# (`write_transaction`) tries every fraction of a millisecond instead.
BUSY_TIMEOUT = 30.0
_POLL_FIRST, _POLL_MAX = 0.0002, 0.001


def connect(url: str, *, pre_ping: bool = True) -> Engine:
    """With `pre_ping`, every checkout from the pool first asks PostgreSQL whether the
    connection still lives (one round trip). The dispatcher turns it off and retries
    instead (`relay.store.disconnects`): it checks out several times per Kartra call."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": BUSY_TIMEOUT, "check_same_thread": False}
        )
        event.listen(engine, "connect", _tune_sqlite)
        return engine
    return create_engine(url, pool_pre_ping=pre_ping, pool_size=10, max_overflow=10)


@contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """A connection whose reads all see the database as of the first one, for a view
    made of several statements (PostgreSQL's READ COMMITTED gives each statement its
    own snapshot; Python's sqlite3 opens no transaction for a SELECT)."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
        else:
            conn.exec_driver_sql("BEGIN")
        try:
            yield conn
        finally:
            conn.rollback()


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """`engine.begin()`; on SQLite the write lock is taken first (`BEGIN IMMEDIATE`),
    retried every 0.2-1 ms for up to BUSY_TIMEOUT instead of through SQLite's busy
    handler. A refused `BEGIN IMMEDIATE` has done nothing, so retrying it is safe."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            _take_write_lock(conn.connection.dbapi_connection)
        yield conn


def _take_write_lock(dbapi_connection) -> None:
    deadline = time.monotonic() + BUSY_TIMEOUT
    pause = _POLL_FIRST
    _set_busy_timeout(dbapi_connection, 0)
    try:
        while True:
            try:
                dbapi_connection.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                # any kind of busy (the extended codes: another process recovering the
                # WAL after a crash, say) is worth another try
                busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() > deadline:
                    raise OperationalError("BEGIN IMMEDIATE", None, exc) from None
            time.sleep(pause)
            pause = min(pause * 1.5, _POLL_MAX)
    finally:
        _set_busy_timeout(dbapi_connection, BUSY_TIMEOUT)


def _set_busy_timeout(dbapi_connection, seconds: float) -> None:
    dbapi_connection.execute(f"PRAGMA busy_timeout={int(seconds * 1000)}")


def _tune_sqlite(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # pages a change frees are zeroed, so erased data (redact, purge) does not linger in
    # the file; some SQLite builds default to it, the relay does not count on that
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()
    _set_busy_timeout(dbapi_connection, BUSY_TIMEOUT)


def empty_write_ahead_log(engine: Engine) -> None:
    """On SQLite, copy the write-ahead log into the database and empty it: the log keeps
    the pages as they were before a change, erased data included, until then. Waits for
    readers (the busy timeout); a no-op on PostgreSQL."""
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision`; safe to run on every release.

    Alembic gets the connection, never the URL: its options are ConfigParser values,
    where a `%` (a percent-encoded password) is an error that quotes the whole URL."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
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
    """Whether the database is at the newest migration (Alembic's version table holds
    exactly that revision)."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return False
        stored = connection.execute(text("SELECT version_num FROM alembic_version")).scalars()
        return stored.all() == [_head_revision()]


@functools.cache
def _head_revision() -> str:
    """The revision no other migration revises, from the files' `revision` and
    `down_revision` assignments, read without importing them (they import Alembic)."""
    revisions, revised = set(), set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if not (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)):
                continue
            name = node.targets[0].id
            if name == "revision":
                revisions.add(ast.literal_eval(node.value))
            elif name == "down_revision":
                value = ast.literal_eval(node.value) or ()
                revised.update(value if isinstance(value, tuple | list) else [value])
    heads = revisions - revised
    if len(heads) != 1:
        raise RuntimeError(f"migrations have {len(heads)} heads, not one: {sorted(heads)}")
    return heads.pop()


def upsert(conn, table: Table, values: dict) -> None:
    """Insert a row, or update it when its primary key exists: atomic on both engines,
    so two workers learning the same thing at once cannot collide."""
    conn.execute(_upsert_statement(conn.dialect.name, table, tuple(values)), values)


@functools.cache
def _upsert_statement(dialect: str, table: Table, columns: tuple[str, ...]):
    """Built once per table and set of columns: building it is most of an upsert's cost
    (the ingest path runs one per event that teaches an identity). Each dialect's insert
    is imported here: a process loads only its own database's dialect."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    keys = [c.name for c in table.primary_key]
    statement = insert(table)
    return statement.on_conflict_do_update(
        index_elements=keys,
        set_={k: statement.excluded[k] for k in columns if k not in keys},
    )


def insert_rows(conn: Connection, table: Table, rows: list[dict], suffix: str = "") -> CursorResult:
    """One multi-row `INSERT INTO table (...) VALUES (...), (...) suffix` in the driver's
    own SQL; every row has the same keys, as in an executemany.

    For the ingest path, where compiling a statement, computing its cache key and
    processing each parameter through SQLAlchemy cost more than the database's own work.
    Values still pass the columns' bind processors (JSON encoding, UTC datetimes), so a
    row is stored exactly as SQLAlchemy stores it; errors are still SQLAlchemy's
    (`OperationalError`, `IntegrityError`) and a dead connection is still invalidated.
    """
    columns = tuple(rows[0])
    processors = _bind_processors(conn.dialect, table, columns)
    processed: dict[int, object] = {}  # by id: one value in many rows (a group's `now`) once
    parameters = []
    for row in rows:
        for process, name in zip(processors, columns, strict=True):
            value = row[name]
            if process is not None:
                key = id(value)
                if key not in processed:
                    processed[key] = process(value)
                value = processed[key]
            parameters.append(value)
    statement = _insert_rows_sql(conn.dialect, table, columns, suffix, len(rows))
    return conn.exec_driver_sql(statement, tuple(parameters))


@functools.lru_cache(maxsize=64)
def _bind_processors(dialect, table: Table, columns: tuple[str, ...]) -> tuple:
    return tuple(
        table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in columns
    )


@functools.lru_cache(maxsize=1024)
def _insert_rows_sql(
    dialect, table: Table, columns: tuple[str, ...], suffix: str, rows: int
) -> str:
    """Built once per size of group: at most MAX_GROUP sizes per table."""
    quote = dialect.identifier_preparer
    placeholder = "?" if dialect.paramstyle == "qmark" else "%s"
    row = "(" + ", ".join([placeholder] * len(columns)) + ")"
    names = ", ".join(quote.quote(name) for name in columns)
    values = ", ".join([row] * rows)
    # Names from the table, quoted; placeholders for every value; the suffix is ours.
    statement = f"INSERT INTO {quote.format_table(table)} ({names}) VALUES {values}"  # noqa: S608
    return f"{statement} {suffix}".rstrip()
