"""Fixtures shared by every room's tests."""

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import event
from werkzeug.serving import make_server

from relay.kartra.fake import FakeKartra, create_app
from relay.store import connect, migrate
from relay.store.db import MIGRATIONS
from tests.postgres import Cluster

# The relay's CLI reads a `.env` of the working directory; a developer's own must not
# reach the tests, in this process or in the relay processes they start.
os.environ["ENV_FILE"] = ""

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "sources" / "fixtures"


def fresh_python(code: str, **env: str | None) -> subprocess.CompletedProcess:
    """Run `code` in a new interpreter at the project's root, as a process of the relay
    starts; a variable given as None is left out of its environment."""
    environment = {**os.environ, "LOG_LEVEL": "warning", **env}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={name: value for name, value in environment.items() if value is not None},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


DATABASES = ("sqlite", "postgresql")


def pytest_addoption(parser):
    parser.addoption(
        "--db",
        choices=(*DATABASES, "both"),
        default="both",
        help="Run database tests on SQLite, PostgreSQL or both (default).",
    )


def pytest_configure(config):
    """Several rooms test against the project's shared references, which sit beside the
    checkout: say so plainly rather than fail their modules one by one."""
    if not (SHARED / "kartra" / "API.md").is_file() or not FIXTURES.is_dir():
        raise pytest.UsageError(
            f"the tests read Kartra's API catalogue and the senders' sample deliveries "
            f"from {SHARED}/ (kartra/, sources/), beside this checkout; it is missing"
        )


def pytest_generate_tests(metafunc):
    if "database_kind" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("--db")
        kinds = DATABASES if chosen == "both" else (chosen,)
        if metafunc.definition.get_closest_marker("postgresql_only"):
            kinds = ("postgresql",)
        if metafunc.definition.get_closest_marker("sqlite_only"):
            kinds = ("sqlite",)
        metafunc.parametrize("database_kind", kinds, scope="session")


@pytest.fixture(scope="session")
def postgres():
    cluster = Cluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def database_url(database_kind, tmp_path, request):
    """An empty database of each kind the session tests: every test that stores
    anything runs on SQLite and on PostgreSQL."""
    if database_kind == "sqlite":
        return f"sqlite:///{tmp_path / 'relay.db'}"
    return request.getfixturevalue("postgres").new_database()


@contextmanager
def at_statement(engine, starts_with: str, action, *, moment: str = "before"):
    """Run `action()` once, `moment` ("before" or "after") the first statement of `engine`
    that starts with `starts_with`: another process acting in between. Yields a list that
    holds True once it ran."""
    ran = []

    def hook(conn, cursor, statement, *_):
        if not ran and statement.lstrip().startswith(starts_with):
            ran.append(True)
            action()

    name = f"{moment}_cursor_execute"
    event.listen(engine, name, hook)
    try:
        yield ran
    finally:
        event.remove(engine, name, hook)


def downgrade(engine, revision: str) -> None:
    """Take the schema back to `revision`, as an operator rolling a release back would."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


@pytest.fixture
def engine(database_url):
    engine = connect(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def wsgi() -> Iterator[Callable]:
    """Serve a WSGI app on a free 127.0.0.1 port and return its base URL; every server is
    shut down and joined after the test (handler threads too, so no socket outlives it)."""
    running = []

    def start(app) -> str:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        server.daemon_threads = False
        # A short poll interval keeps shutdown (and so each test) fast.
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
        thread.start()
        running.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def serve(wsgi) -> Callable[[FakeKartra], str]:
    """Start a fake Kartra on a free 127.0.0.1 port; returns its API URL."""
    return lambda fake: wsgi(create_app(fake)) + "/api"
