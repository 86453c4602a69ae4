"""Fixtures shared by every room's tests."""

from pathlib import Path

import pytest

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
