"""An app wired to a fake Kartra on 127.0.0.1, a mapping with a fixable mistake, and
helpers to post events and run the dispatcher once."""

from pathlib import Path

import pytest
from click.testing import CliRunner
from tenacity import wait_none

from relay.cli import main
from relay.config import Account, Config
from relay.dispatch.backoff import Backoff
from relay.dispatch.worker import Dispatcher
from relay.kartra.fake import FakeKartra
from relay.mapping import load_mappings
from relay.web import create_app

KEY, PASSWORD = "key-admin-SECRET-51", "pw-admin-SECRET-62"
TOKEN = "admin-token-SECRET-0123456789"

# The tag name has a typo Kartra refuses ("Custmer"); `fix_mapping` corrects it.
SHOP = """
verify: none
event_id: "{{ body.id }}"
rules:
  - name: purchase
    when: body.type == 'purchase'
    lead:
      email: "{{ body.email | email }}"
      first_name: "{{ body.name | default('') }}"
    actions:
      - {cmd: assign_tag, tag_name: Custmer}
"""


@pytest.fixture
def cli(engine, mappings_dir):
    """`python -m relay ...` through click's runner, on the same record as the app."""
    env = {
        "DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "MAPPINGS_DIR": str(mappings_dir),
        "KARTRA_APP_ID": "",
        "KARTRA_API_KEY": "",
        "KARTRA_API_PASSWORD": "",
    }

    def run(*args, code=0):
        result = CliRunner().invoke(main, list(args), env=env)
        assert result.exit_code == code, result.output
        return result

    return run


@pytest.fixture
def fake():
    return FakeKartra(
        app_id="app-1", accounts={KEY: PASSWORD}, tags={"Customer"}, lists={"Relay Demo"}
    )


@pytest.fixture
def mappings_dir(tmp_path) -> Path:
    directory = tmp_path / "mappings"
    directory.mkdir()
    (directory / "shop.yaml").write_text(SHOP)
    return directory


@pytest.fixture
def config(fake, serve, mappings_dir, engine) -> Config:
    return Config(
        database_url=str(engine.url),
        mappings_dir=mappings_dir,
        kartra_url=serve(fake),
        kartra_app_id="app-1",
        accounts={"default": Account("default", KEY, PASSWORD)},
        admin_token=TOKEN,
    )


@pytest.fixture
def app(config, engine):
    app = create_app(config, engine)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app):
    return app.test_client()


def post(client, email="jane@example.com", id="ord_1", type="purchase", **extra) -> str:
    answer = client.post(
        "/hooks/shop", json={"id": id, "type": type, "email": email, "name": "Jane", **extra}
    )
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()["event_id"]


def deliver(app, **kwargs) -> int:
    """Run the dispatcher once over what is due, as the worker would."""
    relay = app.extensions["relay"]
    kwargs.setdefault("retry_wait", wait_none())
    return Dispatcher(relay.config, relay.engine, **kwargs).run_once()


def deliver_or_die(app) -> int:
    """One attempt per delivery, after which a transient failure is final (`dead`)."""
    return deliver(app, backoff=Backoff(max_attempts=1))


def fix_mapping(app) -> None:
    relay = app.extensions["relay"]
    shop = relay.config.mappings_dir / "shop.yaml"
    shop.write_text(shop.read_text().replace("Custmer", "Customer"))
    relay.mappings = load_mappings(relay.config.mappings_dir)
