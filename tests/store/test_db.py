import pytest
from sqlalchemy.exc import OperationalError

from relay.store import connect, wait_for_schema
from tests.postgres import _free_port


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
