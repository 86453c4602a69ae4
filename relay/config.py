"""Every setting of the relay, read from the environment in this one module.

`Config.from_env()` is called once at start-up; a missing or malformed setting raises
`ConfigError` with one line naming it, and the CLI prints that line and exits.
Tests build a `Config` directly with the values they need.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_KARTRA_URL = "https://app.kartra.com/api"
DEFAULT_DATABASE_URL = "sqlite:///relay.db"
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it."""


def load_env_file(environ: MutableMapping[str, str] = os.environ) -> Path | None:
    """Put the settings of `ENV_FILE` (default `.env` in the working directory) into
    `environ`, each only where the environment does not set it; return the file read.

    python-dotenv reads it: quotes are removed, `#` after a space starts a comment, and
    values are otherwise literal (`${NAME}` is not expanded), so a password with `$` or
    `#` arrives whole. An empty ENV_FILE reads no file; one named but missing is an error,
    and so is a line python-dotenv cannot read (an unclosed quote would take the lines
    after it along, silently): the error names the line, never its text.
    """
    name = environ.get("ENV_FILE", ".env")
    if not name:
        return None
    path = Path(name)
    if not path.is_file():
        if "ENV_FILE" in environ:
            raise ConfigError(f"ENV_FILE: {name} is not a file")
        return None
    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    with path.open(encoding="utf-8") as stream:
        broken = next((b.original.line for b in parse_stream(stream) if b.error), None)
    if broken is not None:
        raise ConfigError(
            f"{name}: line {broken} cannot be read (an unclosed quote?); it and the lines "
            "it runs into would be lost"
        )
    for key, value in dotenv_values(path, interpolate=False).items():
        if value is not None:
            environ.setdefault(key, value)
    return path


@dataclass(frozen=True)
class Account:
    """The credentials of one Kartra account (an App user). Never logged in clear."""

    name: str
    api_key: str = field(repr=False)
    api_password: str = field(repr=False)


@dataclass(frozen=True)
class Config:
    database_url: str = DEFAULT_DATABASE_URL
    mappings_dir: Path = Path("mappings")
    port: int = 5000
    kartra_url: str = DEFAULT_KARTRA_URL
    kartra_app_id: str | None = None
    accounts: dict[str, Account] = field(default_factory=dict, repr=False)
    kartra_test_mode: bool = False
    kartra_rate_limit: float = 20.0
    retry_first_delay: float = 30.0
    kartra_timeout: float = 6.0
    delivery_lease: float = 30.0
    admin_token: str | None = field(default=None, repr=False)
    max_body_bytes: int = 1024 * 1024
    request_read_timeout: float = 15.0
    ingest_rate_limit_per_ip: int = 0
    ingest_rate_limit_per_route: int = 0
    trust_x_forwarded_for: bool = False
    admin_signin_attempts: int = 10
    log_level: str = "info"
    retention_days: int = 30

    @property
    def dry_run(self) -> bool:
        """Without an App ID and credentials the relay records calls instead of sending them."""
        return not (self.kartra_app_id and self.accounts)

    @property
    def mode(self) -> str:
        if self.dry_run:
            return "dry-run"
        return "test" if self.kartra_test_mode else "live"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        return cls(
            database_url=_database_url(env.get("DATABASE_URL") or DEFAULT_DATABASE_URL),
            mappings_dir=Path(env.get("MAPPINGS_DIR") or "mappings"),
            port=_integer(env, "PORT", 5000, low=1, high=65535),
            kartra_url=_kartra_url(env.get("KARTRA_API_URL") or DEFAULT_KARTRA_URL),
            kartra_app_id=env.get("KARTRA_APP_ID") or None,
            accounts=_accounts(env),
            kartra_test_mode=_boolean(env, "KARTRA_TEST_MODE"),
            kartra_rate_limit=_number(env, "KARTRA_RATE_LIMIT", 20.0),
            retry_first_delay=_number(env, "RETRY_FIRST_DELAY", 30.0),
            kartra_timeout=_number(env, "KARTRA_TIMEOUT", 6.0),
            delivery_lease=_number(env, "DELIVERY_LEASE", 30.0),
            admin_token=_admin_token(env.get("ADMIN_TOKEN") or None),
            max_body_bytes=_integer(env, "MAX_BODY_BYTES", 1024 * 1024, low=1024),
            request_read_timeout=_number(env, "REQUEST_READ_TIMEOUT", 15.0),
            ingest_rate_limit_per_ip=_integer(env, "INGEST_RATE_LIMIT_PER_IP", 0, low=0),
            ingest_rate_limit_per_route=_integer(env, "INGEST_RATE_LIMIT_PER_ROUTE", 0, low=0),
            trust_x_forwarded_for=_boolean(env, "TRUST_X_FORWARDED_FOR"),
            admin_signin_attempts=_integer(env, "ADMIN_SIGNIN_ATTEMPTS", 10, low=1, high=10_000),
            log_level=_log_level(env.get("LOG_LEVEL") or "info"),
            retention_days=_integer(env, "RETENTION_DAYS", 30, low=0, high=3650),
        )


def _database_url(url: str) -> str:
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if not re.match(r"^(sqlite|postgresql\+psycopg)://", url):
        raise ConfigError(
            "DATABASE_URL: expected sqlite:///path or postgres://user:pass@host/db, "
            f"got scheme {url.split(':', 1)[0]!r}"
        )
    return url


def _kartra_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        # never echoed: what is before the @ may be a password
        raise ConfigError(
            "KARTRA_API_URL: must not carry a user or password before '@' (Kartra takes "
            "the App ID, key and password in the body, from their own settings)"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"KARTRA_API_URL: expected an https:// URL, got {url!r}")
    if parts.scheme == "http" and parts.hostname not in LOCAL_HOSTS:
        raise ConfigError(
            "KARTRA_API_URL: must be https (credentials travel in the body); "
            "plain http is allowed only for localhost"
        )
    return url


def _accounts(env: Mapping[str, str]) -> dict[str, Account]:
    """The default account from KARTRA_API_KEY/KARTRA_API_PASSWORD, plus one per name in
    KARTRA_ACCOUNTS with KARTRA_<NAME>_API_KEY/KARTRA_<NAME>_API_PASSWORD."""
    accounts = {}
    key = env.get("KARTRA_API_KEY") or None
    password = env.get("KARTRA_API_PASSWORD") or None
    if bool(key) != bool(password):
        missing = "KARTRA_API_PASSWORD" if key else "KARTRA_API_KEY"
        raise ConfigError(f"{missing}: required when the other Kartra credential is set")
    if key:
        accounts["default"] = Account("default", key, password)
    for name in (n.strip() for n in (env.get("KARTRA_ACCOUNTS") or "").split(",")):
        if not name:
            continue
        if not re.fullmatch(r"[a-z0-9_]{1,64}", name) or name == "default":
            raise ConfigError(
                f"KARTRA_ACCOUNTS: {name!r} is not a valid account name "
                "(up to 64 lower-case letters, digits and _, not 'default')"
            )
        prefix = f"KARTRA_{name.upper()}_"
        for suffix in ("API_KEY", "API_PASSWORD"):
            if not env.get(prefix + suffix):
                raise ConfigError(
                    f"{prefix}{suffix}: required for account {name!r} named in KARTRA_ACCOUNTS"
                )
        accounts[name] = Account(name, env[prefix + "API_KEY"], env[prefix + "API_PASSWORD"])
    if accounts and not env.get("KARTRA_APP_ID"):
        raise ConfigError("KARTRA_APP_ID: required when Kartra credentials are set")
    return accounts


def _admin_token(token: str | None) -> str | None:
    if token is not None and len(token) < 16:
        raise ConfigError("ADMIN_TOKEN: use at least 16 characters (e.g. `openssl rand -hex 24`)")
    return token


def _integer(env: Mapping[str, str], name: str, default: int, *, low: int, high: int = 2**31):
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}: expected {low}..{high}, got {value}")
    return value


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a number, got {raw!r}") from None
    if not 0 < value <= 1000:
        raise ConfigError(f"{name}: expected a number in (0, 1000]")
    return value


def _boolean(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name}: expected true or false, got {raw!r}")


def _log_level(level: str) -> str:
    level = level.lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"LOG_LEVEL: expected debug, info, warning or error, got {level!r}")
    return level
