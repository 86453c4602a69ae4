import os
import subprocess
import sys

import pytest

from relay.config import Config, ConfigError, load_env_file
from tests.conftest import ROOT


def test_defaults_are_a_dry_run_on_sqlite():
    config = Config.from_env({})
    assert config.database_url == "sqlite:///relay.db"
    assert config.port == 5000
    assert config.kartra_url == "https://app.kartra.com/api"
    assert config.dry_run and config.mode == "dry-run"
    assert config.accounts == {}


def test_credentials_make_a_live_default_account():
    config = Config.from_env(
        {"KARTRA_APP_ID": "app", "KARTRA_API_KEY": "key-123", "KARTRA_API_PASSWORD": "pw-456"}
    )
    assert config.mode == "live"
    assert config.accounts["default"].api_key == "key-123"
    assert "key-123" not in repr(config) and "pw-456" not in repr(config)


def test_test_mode_is_said():
    env = {
        "KARTRA_APP_ID": "a",
        "KARTRA_API_KEY": "k",
        "KARTRA_API_PASSWORD": "p",
        "KARTRA_TEST_MODE": "true",
    }
    assert Config.from_env(env).mode == "test"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
        ("postgresql://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_database_url_accepts_heroku_spellings(url, expected):
    assert Config.from_env({"DATABASE_URL": url}).database_url == expected


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PORT": "abc"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL"),
        ({"KARTRA_API_URL": "http://kartra.example.com/api"}, "KARTRA_API_URL"),
        ({"KARTRA_API_URL": "not a url"}, "KARTRA_API_URL"),
        ({"KARTRA_API_KEY": "k"}, "KARTRA_API_PASSWORD"),
        ({"KARTRA_API_PASSWORD": "p"}, "KARTRA_API_KEY"),
        ({"KARTRA_API_KEY": "k", "KARTRA_API_PASSWORD": "p"}, "KARTRA_APP_ID"),
        ({"KARTRA_ACCOUNTS": "Shop-EU"}, "KARTRA_ACCOUNTS"),
        ({"KARTRA_ACCOUNTS": "default"}, "KARTRA_ACCOUNTS"),
        ({"KARTRA_ACCOUNTS": "a" * 65}, "KARTRA_ACCOUNTS"),
        (
            {"KARTRA_ACCOUNTS": "shop_eu", "KARTRA_SHOP_EU_API_KEY": "k"},
            "KARTRA_SHOP_EU_API_PASSWORD",
        ),
        ({"KARTRA_TEST_MODE": "maybe"}, "KARTRA_TEST_MODE"),
        ({"KARTRA_RATE_LIMIT": "0"}, "KARTRA_RATE_LIMIT"),
        ({"ADMIN_TOKEN": "short"}, "ADMIN_TOKEN"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"MAX_BODY_BYTES": "12"}, "MAX_BODY_BYTES"),
    ],
)
def test_a_bad_setting_is_named_in_one_line(env, named):
    with pytest.raises(ConfigError) as info:
        Config.from_env(env)
    message = str(info.value)
    assert message.startswith(named + ":")
    assert "\n" not in message


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8765/api", "http://localhost/api", "http://[::1]:8765/api"]
)
def test_plain_http_is_allowed_for_a_local_fake_kartra(url):
    assert Config.from_env({"KARTRA_API_URL": url}).kartra_url == url


@pytest.mark.parametrize(
    "url",
    [
        "HTTP://app.kartra.com/api",
        "http://localhost.example.com/api",
        "http://127.0.0.1.nip.io/api",
        "http://localhost@kartra.example.com/api",
        "http://127.0.0.1:80@kartra.example.com/api",
        "ftp://app.kartra.com/api",
        "//app.kartra.com/api",
    ],
)
def test_credentials_travel_only_over_https_or_to_this_machine(url):
    """Kartra's key and password are in the body: a plain-http URL to anywhere but this
    machine, however it is spelled, stops start-up."""
    with pytest.raises(ConfigError, match="^KARTRA_API_URL: "):
        Config.from_env({"KARTRA_API_URL": url})


def test_start_up_refuses_plain_http_in_one_line_naming_the_setting(tmp_path):
    env = {
        "PATH": os.environ["PATH"],
        "ENV_FILE": "",
        "KARTRA_API_URL": "http://kartra.example.com/api",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'relay.db'}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--host", "127.0.0.1"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "kartra-relay: KARTRA_API_URL: must be https (credentials travel in the body); "
        "plain http is allowed only for localhost"
    ]


def test_several_accounts_share_one_app():
    config = Config.from_env(
        {
            "KARTRA_APP_ID": "app",
            "KARTRA_API_KEY": "k0",
            "KARTRA_API_PASSWORD": "p0",
            "KARTRA_ACCOUNTS": "shop_eu, shop_us",
            "KARTRA_SHOP_EU_API_KEY": "k1",
            "KARTRA_SHOP_EU_API_PASSWORD": "p1",
            "KARTRA_SHOP_US_API_KEY": "k2",
            "KARTRA_SHOP_US_API_PASSWORD": "p2",
        }
    )
    assert sorted(config.accounts) == ["default", "shop_eu", "shop_us"]
    assert config.accounts["shop_us"].api_password == "p2"


def test_named_accounts_without_a_default_one():
    config = Config.from_env(
        {
            "KARTRA_APP_ID": "app",
            "KARTRA_ACCOUNTS": "shop_eu",
            "KARTRA_SHOP_EU_API_KEY": "k1",
            "KARTRA_SHOP_EU_API_PASSWORD": "p1",
        }
    )
    assert list(config.accounts) == ["shop_eu"] and config.mode == "live"


def test_the_env_file_fills_what_the_environment_does_not_set(tmp_path):
    env_file = tmp_path / "settings.env"
    env_file.write_text(
        "KARTRA_API_PASSWORD=ab$cd#ef\n"
        'KARTRA_API_KEY="k ${HOME} y"  # a note\n'
        "KARTRA_APP_ID=from-the-file\n"
        "KARTRA_TEST_MODE=\n"
    )
    environ = {"ENV_FILE": str(env_file), "KARTRA_APP_ID": "from-the-environment"}
    assert load_env_file(environ) == env_file
    assert environ == {
        "ENV_FILE": str(env_file),
        "KARTRA_APP_ID": "from-the-environment",
        "KARTRA_API_PASSWORD": "ab$cd#ef",
        "KARTRA_API_KEY": "k ${HOME} y",
        "KARTRA_TEST_MODE": "",
    }


def test_without_an_env_file_nothing_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_env_file({}) is None
    (tmp_path / ".env").write_text("LOG_LEVEL=debug\n")
    assert load_env_file(environ := {"ENV_FILE": ""}) is None and environ == {"ENV_FILE": ""}
    with pytest.raises(ConfigError, match="^ENV_FILE: staging.env is not a file$"):
        load_env_file({"ENV_FILE": "staging.env"})


def test_the_cli_reads_the_env_file_of_its_working_directory(tmp_path):
    """What the README promises: a webhook secret in `.env` is enough for `check`."""
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    (mappings / "stripe.yaml").write_text((ROOT / "mappings/examples/stripe.yaml").read_text())
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "MAPPINGS_DIR": str(mappings)}

    def check() -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "relay", "check"]
        return subprocess.run(
            command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )

    done = check()
    assert done.returncode == 1 and "STRIPE_WEBHOOK_SECRET is not set" in done.stderr
    (tmp_path / ".env").write_text("STRIPE_WEBHOOK_SECRET='whsec_from#the$file'\n")
    done = check()
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "url", ["https://user:s3cr3t-pw@app.kartra.com/api", "ftp://user:s3cr3t-pw@x/api"]
)
def test_a_kartra_url_with_a_password_is_refused_without_echoing_it(url):
    """It would be logged at start-up (relay_configured) and echoed by the error."""
    with pytest.raises(ConfigError, match="^KARTRA_API_URL: must not carry") as refused:
        Config.from_env({"KARTRA_API_URL": url})
    assert "s3cr3t" not in str(refused.value)


def test_an_unreadable_env_file_line_stops_start_up_naming_the_line_not_its_text(tmp_path):
    """An unclosed quote made python-dotenv drop that setting and the lines after it,
    with a warning naming no setting; the relay then started without them."""
    env_file = tmp_path / ".env"
    env_file.write_text('A=1\nKARTRA_API_PASSWORD="s3cr3t\nADMIN_TOKEN=0123456789abcdef0123\n')
    environ = {"ENV_FILE": str(env_file)}
    with pytest.raises(ConfigError, match="line 2 cannot be read") as refused:
        load_env_file(environ)
    assert "s3cr3t" not in str(refused.value) and environ == {"ENV_FILE": str(env_file)}
