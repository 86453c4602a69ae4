"""The reference issue 5 sets its ingest targets by: the bare Flask endpoint plus one
plain INSERT and commit per request, nothing else (no verification, no mapping, no
group commit). The issue puts it at about 0.6x bare on SQLite (WAL, synchronous=NORMAL)
and 0.4x on PostgreSQL (synchronous commit on); bench.ingest measures it on this
machine, in the same run, under the relay's gunicorn settings:

    PLAIN_INSERT_DATABASE=sqlite:///PATH|postgresql://... gunicorn bench.plain_insert:app

Each gunicorn thread keeps one connection of the driver's own (sqlite3, psycopg), the
cheapest way to run one statement. `prepare` creates the table (and turns on WAL, which
is kept in the file) before gunicorn starts.

With PLAIN_INSERT_THROUGH=sqlalchemy the same INSERT goes through SQLAlchemy Core, as
the chosen stack runs a statement: a pooled connection from `engine.begin()`, the
statement built from a `Table`, the commit when the block ends. That is the floor of
the stack: what Flask and SQLAlchemy cost for one stored row, before the relay adds
anything.
"""

import os
import sqlite3
import threading

import psycopg
from flask import Flask, jsonify, request
from sqlalchemy import Column, Engine, MetaData, Table, Text, create_engine, event, insert

TABLE = "CREATE TABLE events (id TEXT PRIMARY KEY, route TEXT, body TEXT)"
INSERT = {
    sqlite3.Connection: "INSERT INTO events (id, route, body) VALUES (?, ?, ?)",
    psycopg.Connection: "INSERT INTO events (id, route, body) VALUES (%s, %s, %s)",
}

app = Flask("plain_insert")
_local = threading.local()
_events = Table(
    "events",
    MetaData(),
    Column("id", Text, primary_key=True),
    Column("route", Text),
    Column("body", Text),
)


def database_for(url: str) -> str:
    """A relay DATABASE_URL (SQLAlchemy's form) as this app takes it: sqlite:///PATH, or
    a libpq URL."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def connect(database: str):
    if database.startswith("sqlite:///"):
        connection = sqlite3.connect(database.removeprefix("sqlite:///"), timeout=30)
        connection.execute("PRAGMA synchronous=NORMAL")
        return connection
    return psycopg.connect(database)


def prepare(database: str) -> None:
    connection = connect(database)
    if database.startswith("sqlite:///"):
        connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(TABLE)
    connection.commit()
    connection.close()


def engine(database: str) -> Engine:
    """SQLAlchemy's engine for `database`, a pool as large as gunicorn's threads; on
    SQLite with the driver connection's settings (synchronous=NORMAL, 30 s busy
    timeout)."""
    url = database.replace("postgresql://", "postgresql+psycopg://", 1)
    threads = int(os.environ.get("GUNICORN_THREADS", "8"))
    created = create_engine(url, pool_size=threads, max_overflow=0)
    if url.startswith("sqlite"):

        @event.listens_for(created, "connect")
        def _settings(connection, _record):
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA busy_timeout=30000")

    return created


def _connection():
    connection = getattr(_local, "connection", None)
    if connection is None:
        connection = _local.connection = connect(os.environ["PLAIN_INSERT_DATABASE"])
    return connection


_engine = (
    engine(os.environ["PLAIN_INSERT_DATABASE"])
    if os.environ.get("PLAIN_INSERT_THROUGH") == "sqlalchemy"
    else None
)


@app.post("/hooks/<route>")
def receive(route: str):
    body = request.get_json()
    if _engine is not None:
        with _engine.begin() as connection:
            connection.execute(
                insert(_events).values(
                    id=body["id"], route=route, body=request.get_data(as_text=True)
                )
            )
        return jsonify(id=body["id"], route=route), 202
    connection = _connection()
    connection.execute(
        INSERT[type(connection)], (body["id"], route, request.get_data(as_text=True))
    )
    connection.commit()
    return jsonify(id=body["id"], route=route), 202
