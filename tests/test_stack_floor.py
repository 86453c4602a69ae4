"""The benchmark's floor of the chosen stack (issue 5) stores what it claims to: the
one-INSERT app through SQLAlchemy Core, and the sender that records each call."""

from __future__ import annotations

import importlib
import sqlite3

from bench import bare_sender, plain_insert


def test_the_one_insert_app_through_sqlalchemy_stores_each_request(tmp_path, monkeypatch):
    database = f"sqlite:///{tmp_path}/floor.db"
    plain_insert.prepare(database)
    monkeypatch.setenv("PLAIN_INSERT_DATABASE", database)
    monkeypatch.setenv("PLAIN_INSERT_THROUGH", "sqlalchemy")
    floor = importlib.reload(plain_insert)
    try:
        client = floor.app.test_client()
        answers = [client.post("/hooks/r", json={"id": f"e{n}"}) for n in range(3)]
        through_the_pool = floor._engine.pool.checkedin()
    finally:
        monkeypatch.delenv("PLAIN_INSERT_THROUGH")
        importlib.reload(plain_insert)
    assert [a.status_code for a in answers] == [202] * 3
    assert through_the_pool == 1  # SQLAlchemy's pooled connection, not the driver's own
    rows = sqlite3.connect(tmp_path / "floor.db").execute("SELECT id, route, body FROM events")
    assert sorted(rows) == [(f"e{n}", "r", f'{{"id": "e{n}"}}') for n in range(3)]


def test_the_floor_sender_records_each_call_in_its_row(tmp_path, capsys):
    finish = bare_sender.finisher(f"sqlite:///{tmp_path}/calls.db", calls=3, threads=2)
    finish(1, 200)
    rows = sqlite3.connect(tmp_path / "calls.db").execute(
        "SELECT n, status, finished_at IS NOT NULL FROM floor_calls ORDER BY n"
    )
    assert list(rows) == [(0, None, 0), (1, 200, 1), (2, None, 0)]
    assert '"event": "kartra_call"' in capsys.readouterr().err
