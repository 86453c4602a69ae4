"""At most two malloc arenas in the relay's threaded processes (relay/arenas.py). Each
check runs in a fresh interpreter: glibc's limit holds for the whole process."""

import os
import textwrap

import pytest

from relay.store import connect, migrate
from tests.conftest import fresh_python

# Eight threads allocate at once, as gunicorn's threads or the senders do; glibc then
# prints one "Arena N:" block per arena on stderr.
ARENAS_AFTER_EIGHT_THREADS = """
import ctypes, threading

barrier = threading.Barrier(9)

def allocate():
    kept = [bytearray(4096) for _ in range(100)]
    barrier.wait()
    barrier.wait()

threads = [threading.Thread(target=allocate) for _ in range(8)]
for thread in threads:
    thread.start()
barrier.wait()
ctypes.CDLL(None).malloc_stats()
barrier.wait()
for thread in threads:
    thread.join()
"""

glibc = pytest.mark.skipif(
    not os.confstr("CS_GNU_LIBC_VERSION"), reason="malloc arenas are glibc's"
)


def arenas(code: str, **env: str | None) -> int:
    done = fresh_python(textwrap.dedent(code) + ARENAS_AFTER_EIGHT_THREADS, **env)
    return done.stderr.count("Arena ")


@glibc
def test_threads_share_two_arenas():
    assert arenas("", MALLOC_ARENA_MAX=None) > 2  # glibc's default: one per thread
    code = "from relay.arenas import limit_malloc_arenas\nassert limit_malloc_arenas()"
    assert arenas(code, MALLOC_ARENA_MAX=None) == 2


@glibc
def test_malloc_arena_max_from_the_environment_wins():
    code = "from relay.arenas import limit_malloc_arenas\nassert not limit_malloc_arenas()"
    assert arenas(code, MALLOC_ARENA_MAX="3") == 3


@glibc
def test_the_worker_limits_its_arenas(tmp_path):
    database = f"sqlite:///{tmp_path / 'relay.db'}"
    engine = connect(database)
    migrate(engine)
    engine.dispose()
    run_and_stop = """
        from relay.dispatch.worker import Dispatcher
        from relay.cli import main

        Dispatcher.run = lambda self: None
        main(["worker"], standalone_mode=False)
    """
    assert arenas(run_and_stop, DATABASE_URL=database, MALLOC_ARENA_MAX=None) == 2


@glibc
def test_a_gunicorn_worker_limits_its_arenas():
    init_process = """
        from gunicorn.workers.gthread import ThreadWorker
        from relay.gunicorn_worker import DeadlineWorker

        ThreadWorker.init_process = lambda self: None
        DeadlineWorker.init_process(object.__new__(DeadlineWorker))
    """
    assert arenas(init_process, MALLOC_ARENA_MAX=None) == 2
