"""Fixtures shared by every room's tests."""

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from relay.kartra.fake import FakeKartra, create_app
from relay.store import connect, migrate

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "sources" / "fixtures"


@pytest.fixture
def engine(tmp_path):
    engine = connect(f"sqlite:///{tmp_path / 'relay.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def serve() -> Iterator[Callable[[FakeKartra], str]]:
    """Start a fake on a free 127.0.0.1 port; every server is shut down and joined after
    the test (handler threads too, so no socket outlives it)."""
    running = []

    def start(fake: FakeKartra) -> str:
        server = make_server("127.0.0.1", 0, create_app(fake), threaded=True)
        server.daemon_threads = False
        # A short poll interval keeps shutdown (and so each test) fast.
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
        thread.start()
        running.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}/api"

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join()
