"""The reference issue 5 sets its ingest targets by: the bare Flask endpoint plus one
plain INSERT and commit per request, nothing else (no verification, no mapping, no
group commit). The issue puts it at about 0.6x bare on SQLite (WAL, synchronous=NORMAL)
and 0.4x on PostgreSQL (synchronous commit on); bench.ingest measures it on this
machine, in the same run, under the relay's gunicorn settings:

    PLAIN_INSERT_DATABASE=sqlite:///PATH|postgresql://... gunicorn bench.plain_insert:app

Each gunicorn thread keeps one connection of the driver's own (sqlite3, psycopg), the
cheapest way to run one statement. `prepare` creates the table (and turns on WAL, which
is kept in the file) before gunicorn starts.
"""

import os
import sqlite3
import threading

import psycopg
from flask import Flask, jsonify, request

TABLE = "CREATE TABLE events (id TEXT PRIMARY KEY, route TEXT, body TEXT)"
INSERT = {
    sqlite3.Connection: "INSERT INTO events (id, route, body) VALUES (?, ?, ?)",
    psycopg.Connection: "INSERT INTO events (id, route, body) VALUES (%s, %s, %s)",
}

app = Flask("plain_insert")
_local = threading.local()


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


def _connection():
    connection = getattr(_local, "connection", None)
    if connection is None:
        connection = _local.connection = connect(os.environ["PLAIN_INSERT_DATABASE"])
    return connection


@app.post("/hooks/<route>")
def receive(route: str):
    body = request.get_json()
    connection = _connection()
    connection.execute(
        INSERT[type(connection)], (body["id"], route, request.get_data(as_text=True))
    )
    connection.commit()
    return jsonify(id=body["id"], route=route), 202
