"""Each process imports only what it uses (issue 5, memory): every module a process loads
stays resident in it, and the web processes, gunicorn's master and the worker are
measured together. Each check runs in a fresh interpreter, as the process starts."""

import json
import textwrap

from relay.store import connect, migrate
from tests.conftest import fresh_python

REPORT = "import json, sys; print(json.dumps(sorted(m for m in {} if m in sys.modules)))"


def loaded(code: str, modules: list[str], **env: str | None) -> list[str]:
    """Which of `modules` a fresh interpreter has loaded after running `code`; a
    variable given as None is left out of its environment."""
    done = fresh_python(textwrap.dedent(code) + "\n" + REPORT.format(modules), **env)
    return json.loads(done.stdout.splitlines()[-1])


def test_the_web_app_leaves_the_worker_and_admin_libraries_alone(tmp_path):
    only_elsewhere = [
        "requests",  # the Kartra client: the worker's
        "tenacity",
        "cryptography",  # whpk_ keys and PayPal routes only
        "apispec",  # the admin API, with ADMIN_TOKEN
        "prometheus_client",
        "sqlalchemy.orm",
        "alembic",  # `relay db upgrade`
        "psycopg",  # PostgreSQL only
        "sqlalchemy.dialects.postgresql",
    ]
    database = f"sqlite:///{tmp_path / 'relay.db'}"
    assert loaded("import app", only_elsewhere, DATABASE_URL=database, ADMIN_TOKEN="") == []


def test_gunicorns_master_loads_no_relay_module_but_its_settings():
    code = "import relay.gunicorn_conf, relay.gunicorn_worker"
    assert loaded(code, ["relay.config", "flask", "sqlalchemy", "structlog"]) == []


WORKER_STARTED_AND_STOPPED = """
    from relay.dispatch.worker import Dispatcher
    from relay.cli import main

    Dispatcher.run = lambda self: None
    main(["worker"], standalone_mode=False)
"""


def migrated_sqlite(tmp_path) -> str:
    database = f"sqlite:///{tmp_path / 'relay.db'}"
    engine = connect(database)
    migrate(engine)
    engine.dispose()
    return database


def test_the_worker_loads_neither_flask_nor_the_mapping_engine(tmp_path):
    web_only = ["flask", "werkzeug", "jinja2", "yaml", "marshmallow", "cryptography"]
    unused = ["sqlalchemy.orm", "apispec", "alembic", "sqlalchemy.dialects.postgresql"]
    # Without PROMETHEUS_MULTIPROC_DIR no web process could serve the worker's counters.
    unread = ["prometheus_client", "relay.admin.dispatch_metrics"]
    env = {"DATABASE_URL": migrated_sqlite(tmp_path), "PROMETHEUS_MULTIPROC_DIR": None}
    assert loaded(WORKER_STARTED_AND_STOPPED, web_only + unused + unread, **env) == []


def test_the_worker_counts_for_metrics_when_a_web_process_can_read_them(tmp_path):
    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = {"DATABASE_URL": migrated_sqlite(tmp_path), "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    counting = ["relay.admin.dispatch_metrics"]
    assert loaded(WORKER_STARTED_AND_STOPPED, counting, **env) == counting
