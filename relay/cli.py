"""`python -m relay serve|worker|check|try|db|accounts`."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

import click

from relay.config import Config, ConfigError
from relay.mapping import MappingError, load_mappings

SETUP_ERRORS = (ConfigError, MappingError)


def build_or_exit():
    """The WSGI app, or one clear line per problem and exit status 1."""
    from relay.web import create_app

    try:
        return create_app()
    except SETUP_ERRORS as exc:
        _fail(exc)


def _fail(exc: Exception):
    for line in str(exc).splitlines():
        click.echo(f"kartra-relay: {line}", err=True)
    sys.exit(1)


def _config() -> Config:
    try:
        return Config.from_env()
    except ConfigError as exc:
        _fail(exc)


@click.group()
def main() -> None:
    """Kartra Relay: webhooks from forms and payment processors into Kartra."""


@main.command()
@click.option("--port", type=int, help="Port to listen on (default: $PORT or 5000).")
@click.option("--host", default="0.0.0.0", show_default=True)
def serve(port: int | None, host: str) -> None:
    """Run the web server with the dispatcher inside it (one process)."""
    from gunicorn.app.wsgiapp import run

    config = _config()
    os.environ["RELAY_EMBEDDED_WORKER"] = "1"
    sys.argv = [
        "gunicorn",
        "--config",
        "python:relay.gunicorn_conf",
        "--workers",
        "1",
        "--bind",
        f"{host}:{port or config.port}",
        "relay.cli:build_or_exit()",
    ]
    run()


@main.command()
def worker() -> None:
    """Run the dispatcher alone; SIGTERM finishes the calls in flight and exits."""
    from relay.dispatch.worker import Dispatcher
    from relay.store import connect, schema_is_current
    from relay.web import configure_logging

    config = _config()
    configure_logging(config)
    engine = connect(config.database_url)
    if not schema_is_current(engine):
        _fail(ConfigError("database schema is not current: run `python -m relay db upgrade`"))
    dispatcher = Dispatcher(config, engine)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: dispatcher.shutdown())
    dispatcher.run()


@main.command()
@click.option(
    "--kartra",
    is_flag=True,
    help="Also ask Kartra whether every tag, list, sequence and custom field exists.",
)
def check(kartra: bool) -> None:
    """Validate every mapping file (exit 1 with the errors)."""
    config = _config()
    try:
        mappings = load_mappings(config.mappings_dir)
    except MappingError as exc:
        _fail(exc)
    for route, mapping in sorted(mappings.items()):
        click.echo(f"ok  /hooks/{route}  ({len(mapping.rules)} rules)  {mapping.file}")
    if kartra:
        from relay.kartra.account import missing_names

        try:
            missing = missing_names(config, mappings.values())
        except ConfigError as exc:
            _fail(exc)
        for line in missing:
            click.echo(f"missing in Kartra: {line}", err=True)
        if missing:
            sys.exit(1)
        click.echo("every tag, list, sequence and custom field exists in Kartra")


@main.command("try")
@click.argument("route")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--content-type",
    help="Default: from FILE.headers.json beside it, else by "
    "extension (.json = JSON, else form-encoded).",
)
def try_(route: str, file: Path, content_type: str | None) -> None:
    """Print the Kartra calls the payload in FILE would produce, without sending."""
    from relay.ingest.parse import BodyError, parse_body
    from relay.kartra import Credentials, build_params, mask

    config = _config()
    try:
        mappings = load_mappings(config.mappings_dir)
    except MappingError as exc:
        _fail(exc)
    if route not in mappings:
        _fail(ConfigError(f"unknown route {route!r}; known: {', '.join(sorted(mappings))}"))
    headers = _sample_headers(file)
    content_type = (
        content_type
        or headers.get("content-type")
        or ("application/json" if file.suffix == ".json" else "application/x-www-form-urlencoded")
    )
    try:
        body = parse_body(content_type, file.read_bytes())
    except BodyError as exc:
        _fail(exc)
    rendered = mappings[route].render(
        {"body": body, "headers": headers, "query": {}, "route": route}
    )
    click.echo(
        f"status: {rendered.status}"
        + (f" (rule {rendered.rule})" if rendered.rule else "")
        + (f": {rendered.reason}" if rendered.reason else "")
    )
    credentials = Credentials(config.kartra_app_id or "(KARTRA_APP_ID)", "***", "***")
    for plan in rendered.plans:
        click.echo(f"POST {config.kartra_url}  (account {plan['account']}, for a new lead)")
        click.echo(json.dumps(mask(build_params(credentials, plan)), indent=2))


def _sample_headers(file: Path) -> dict[str, str]:
    beside = file.with_name(file.stem + ".headers.json")
    if not beside.exists():
        return {}
    headers = json.loads(beside.read_text())
    headers = headers.get("headers", headers)
    return {k.lower(): str(v) for k, v in headers.items()}


@main.group()
def db() -> None:
    """Database schema."""


@db.command()
def upgrade() -> None:
    """Create or migrate the schema to the latest version."""
    from relay.store import connect, migrate

    config = _config()
    migrate(connect(config.database_url))
    click.echo("database schema is current")


@main.group(invoke_without_command=True)
@click.pass_context
def accounts(ctx: click.Context) -> None:
    """Kartra accounts: paused or not, and their queues."""
    if ctx.invoked_subcommand:
        return
    from relay.store import connect
    from relay.store.queue import account_states

    config = _config()
    states = account_states(connect(config.database_url))
    for name in sorted(set(states) | set(config.accounts)):
        state = states.get(name, {"paused": False, "reason": None, "counts": {}})
        counts = (
            ", ".join(f"{k} {v}" for k, v in sorted(state["counts"].items())) or "no deliveries"
        )
        flag = f"PAUSED: {state['reason']}" if state["paused"] else "active"
        creds = "" if name in config.accounts else " (no credentials)"
        click.echo(f"{name}{creds}: {flag}; {counts}")


@accounts.command()
@click.argument("name")
def resume(name: str) -> None:
    """Resume a paused account: its waiting deliveries go out again."""
    from relay.store import connect
    from relay.store.queue import resume_account

    config = _config()
    if resume_account(connect(config.database_url), name):
        click.echo(f"{name}: resumed")
    else:
        click.echo(f"{name}: was not paused")


def start_embedded_dispatcher(app) -> tuple[threading.Thread, object]:
    """The single-process mode: the dispatcher as a thread of the web process."""
    from relay.dispatch.worker import Dispatcher

    relay = app.extensions["relay"]
    dispatcher = Dispatcher(relay.config, relay.engine, wake=relay.wake)
    thread = threading.Thread(target=dispatcher.run, name="dispatcher", daemon=True)
    thread.start()
    return thread, dispatcher
