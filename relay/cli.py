"""`python -m relay serve|worker|check|try|db|accounts|events|show|replay|retry|purge|redact`."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import sys
import threading
from datetime import timedelta
from pathlib import Path

import click

from relay.config import Config, ConfigError, load_env_file


def build_or_exit():
    """The WSGI app, or one clear line per problem and exit status 1."""
    from relay.mapping import MappingError
    from relay.web import create_app

    try:
        return create_app()
    except (ConfigError, MappingError) as exc:
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


def _mappings(config: Config) -> dict:
    """The routes' mappings, or their problems and exit status 1. Imported here, not at
    the top: the worker has no use for Jinja, YAML and the schema behind them."""
    from relay.mapping import MappingError, load_mappings

    try:
        return load_mappings(config.mappings_dir)
    except MappingError as exc:
        _fail(exc)


@click.group()
def main() -> None:
    """Kartra Relay: webhooks from forms and payment processors into Kartra.

    Settings come from the environment, and from `.env` (or ENV_FILE) for those it
    does not set."""
    try:
        load_env_file()
    except ConfigError as exc:
        _fail(exc)


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
    from relay.admin.resume import Resume
    from relay.admin.retention import Retention
    from relay.arenas import limit_malloc_arenas
    from relay.dispatch.worker import SWITCH_INTERVAL, Dispatcher
    from relay.logs import configure_for
    from relay.store import connect, wait_for_schema

    limit_malloc_arenas()
    config = _config()
    configure_for(config)
    # Its queue and limiter steps run again on a lost connection instead of pinging
    # before each (relay.store.disconnects); the web keeps pinging.
    engine = connect(config.database_url, pre_ping=False)
    if not wait_for_schema(engine):
        _fail(ConfigError("database schema is not current: run `python -m relay db upgrade`"))
    sys.setswitchinterval(SWITCH_INTERVAL)
    dispatcher = Dispatcher(config, engine)
    if _metrics_shared():
        from relay.admin.dispatch_metrics import instrument

        instrument(dispatcher)
    retention = Retention(engine, config.retention_days)
    resume = Resume(engine, _mappings_when_needed(config))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: dispatcher.shutdown())
    retention.start()
    resume.start()
    dispatcher.run()
    retention.stop.set()
    resume.stop.set()


def _mappings_when_needed(config: Config):
    """The worker's mappings, loaded the first time they are asked for (and again after
    a failure): the mapping engine costs memory a worker rarely needs."""

    @functools.cache
    def mappings():
        from relay.mapping import load_mappings

        return load_mappings(config.mappings_dir)

    return mappings


def _metrics_shared() -> bool:
    """Whether a web process can serve this process's Prometheus figures: only through
    the files of PROMETHEUS_MULTIPROC_DIR (empty counts as unset, as in
    relay/gunicorn_conf.py). Without it the worker's counters would stay in a process
    nobody scrapes, and prometheus_client would cost it about 2 MB for nothing."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


@main.command()
@click.option(
    "--kartra",
    is_flag=True,
    help="Also ask Kartra whether every tag, list, sequence and custom field exists.",
)
def check(kartra: bool) -> None:
    """Validate every mapping file (exit 1 with the errors)."""
    config = _config()
    mappings = _mappings(config)
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
    help="Default: from the headers file beside FILE (NAME.json -> NAME.headers.json), "
    "else by extension (.json = JSON, else form-encoded).",
)
@click.option("--query", default="", help="The URL's query string, e.g. 'source=ads&ref=x'.")
def try_(route: str, file: Path, content_type: str | None, query: str) -> None:
    """Print the Kartra calls the payload in FILE would produce, without sending.

    As the server would render it, but for the signature, which is not checked: the
    same headers left out, and the customer ids the relay has remembered when its
    database is there."""
    from urllib.parse import parse_qs

    from relay.ingest.parse import BodyError, parse_body
    from relay.ingest.routes import DROPPED_HEADERS
    from relay.kartra import Credentials, build_params, mask
    from relay.mapping.filters import IDENTITIES

    config = _config()
    mappings = _mappings(config)
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
    parsed_query = parse_qs(query, keep_blank_values=True)
    payload = {
        "body": body,
        "headers": {k: v for k, v in headers.items() if k not in DROPPED_HEADERS},
        "query": {k: v[0] if len(v) == 1 else v for k, v in parsed_query.items()},
        "route": route,
    }
    remembered = _remembered(config, route)
    if remembered is not None:
        payload[IDENTITIES] = remembered
    rendered = mappings[route].render(payload)
    click.echo(
        f"status: {rendered.status}"
        + (f" (rule {rendered.rule})" if rendered.rule else "")
        + (f": {rendered.reason}" if rendered.reason else "")
    )
    credentials = Credentials(config.kartra_app_id or "(KARTRA_APP_ID)", "***", "***")
    for plan in rendered.plans:
        whom = ", for a new lead" if plan.get("lead") and plan["lead_mode"] == "upsert" else ""
        click.echo(f"POST {config.kartra_url}  (account {plan['account']}{whom})")
        click.echo(json.dumps(mask(build_params(credentials, plan)), indent=2))


def _remembered(config: Config, route: str):
    """The lookup of remembered customer ids for `route`, or None without a migrated
    database to read them from (`try` needs none)."""
    import functools

    from relay.store.identities import find

    engine, problem = _opened(config)
    return None if problem else functools.partial(find, engine, route)


def _sample_headers(file: Path) -> dict[str, str]:
    beside = file.with_name(file.stem + ".headers.json")
    if not beside.exists():
        return {}
    try:
        headers = json.loads(beside.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        _fail(ValueError(f"{beside}: not JSON: {exc}"))
    if isinstance(headers, dict) and isinstance(headers.get("headers"), dict):
        headers = headers["headers"]
    if not isinstance(headers, dict):
        _fail(ValueError(f'{beside}: expected {{"Header-Name": "value", ...}}'))
    return {str(k).lower(): str(v) for k, v in headers.items()}


@main.group()
def db() -> None:
    """Database schema."""


@db.command()
def upgrade() -> None:
    """Create or migrate the schema to the latest version."""
    from sqlalchemy.exc import DBAPIError

    from relay.store import connect, migrate

    engine = connect(_config().database_url)
    try:
        migrate(engine)
    except DBAPIError as exc:
        _fail(ConfigError(f"DATABASE_URL: cannot migrate the database: {exc.orig}"))
    finally:
        engine.dispose()
    click.echo("database schema is current")


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for scripts.")
@click.pass_context
def accounts(ctx: click.Context, as_json: bool) -> None:
    """Kartra accounts: paused or not, their queues, calls today; pause or resume one."""
    if ctx.invoked_subcommand:
        return
    from relay.admin.operations import accounts_overview
    from relay.admin.schemas import AccountSchema

    config = _config()
    overview = accounts_overview(_engine(config), config)
    if as_json:
        _echo_json({"accounts": AccountSchema(many=True).dump(overview)})
        return
    for account in overview:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(account.counts.items())) or "no deliveries"
        flag = f"PAUSED: {account.reason}" if account.paused else "active"
        creds = "" if account.credentials else " (no credentials)"
        click.echo(
            f"{account.name}{creds}: {flag}; {counts}; {account.calls_today} Kartra calls today"
        )


@accounts.command()
@click.argument("name")
@click.option("--reason", default="paused by an operator", show_default=True)
def pause(name: str, reason: str) -> None:
    """Pause an account: its deliveries wait, their retries untouched, until resumed."""
    from relay.store.queue import pause_account

    config = _config()
    engine = _engine(config)
    _known_account_or_fail(engine, config, name)
    pause_account(engine, name, reason)
    click.echo(f"{name}: paused")


@accounts.command()
@click.argument("name")
def resume(name: str) -> None:
    """Resume a paused account: its waiting deliveries go out again."""
    from relay.store.queue import resume_account

    config = _config()
    engine = _engine(config)
    if resume_account(engine, name):
        click.echo(f"{name}: resumed")
        return
    _known_account_or_fail(engine, config, name)
    click.echo(f"{name}: was not paused")


def _known_account_or_fail(engine, config: Config, name: str, mappings=None) -> None:
    """Exit 1 naming `name` unless it is an account the relay knows."""
    from relay.admin.operations import known_account

    if not known_account(engine, config, name, mappings):
        _fail(ValueError(f"unknown account {name!r}: not configured, and no deliveries"))


def _engine(config: Config):
    """An engine closed with the command, so no connection outlives it; a database
    that is missing, unreadable or not migrated stops the command with one line."""
    engine, problem = _opened(config)
    if problem:
        _fail(ConfigError(f"DATABASE_URL: {problem}"))
    return engine


def _opened(config: Config):
    """An engine closed with the command, and what keeps its database from serving the
    commands that read the record (None when nothing does): a SQLite file that is not
    there (connecting would create an empty one; in-memory and `file:` URI databases
    have none to look for), an unreadable database, or a schema not migrated."""
    from sqlalchemy.exc import DBAPIError

    from relay.store import connect, schema_is_current

    engine = connect(config.database_url)
    click.get_current_context().call_on_close(engine.dispose)
    upgrade = "run `python -m relay db upgrade` (or `make run`) first"
    database = engine.url.database or ":memory:"
    on_disk = engine.dialect.name == "sqlite" and not database.startswith((":memory:", "file:"))
    if on_disk and not os.path.exists(database):
        return engine, f"no database at {database}: {upgrade}"
    try:
        current = schema_is_current(engine)
    except DBAPIError as exc:
        return engine, f"cannot read the database: {exc.orig}"
    return engine, None if current else f"the database schema is not current: {upgrade}"


def _echo_json(document) -> None:
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))


AGE = re.compile(r"^(\d+)\s*([smhdw])$")
AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    """`90s`, `15m`, `1h`, `30d`, `2w`: how far back from now."""
    match = AGE.match(text.strip().lower())
    if not match:
        raise click.BadParameter(f"expected a number and s, m, h, d or w (e.g. 30d), got {text!r}")
    return timedelta(**{AGE_UNITS[match[2]]: int(match[1])})


class Age(click.ParamType):
    name = "age"

    def convert(self, value, param, ctx):
        return value if isinstance(value, timedelta) else parse_age(value)


def _filter_options(command):
    """The filters `events` and `replay` share."""
    for option in reversed(
        [
            click.option("--route", help="Only this route."),
            click.option("--status", help="queued, delivered, dry_run, failed, dead, ..."),
            click.option("--email", help="Only events about this lead."),
            click.option("--text", help="Text anywhere in the payload."),
            click.option("--since", type=Age(), help="Received in the last ... (e.g. 1h, 7d)."),
            click.option("--until", type=Age(), help="Received at least ... ago (e.g. 30m)."),
        ]
    ):
        command = option(command)
    return command


def _event_filter(route, status, email, text, since, until):
    """The filter, or a usage error for one that can match nothing by its own terms: a
    misspelt status, or an --until older than --since."""
    from relay.admin.schemas import EVENT_STATUSES
    from relay.store.search import EventFilter
    from relay.store.tables import utcnow

    if status is not None and status not in EVENT_STATUSES:
        raise click.BadParameter(
            f"{status!r} is not one of {', '.join(EVENT_STATUSES)}", param_hint="'--status'"
        )
    if since is not None and until is not None and until >= since:
        raise click.UsageError("--until is as old as --since or older: no event can match")
    now = utcnow()
    return EventFilter(
        route=route,
        status=status,
        email=email,
        text=text,
        since=now - since if since else None,
        until=now - until if until else None,
    )


@main.command()
@_filter_options
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--cursor", help="Continue after this event id (printed at the end of a page).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for scripts.")
def events(route, status, email, text, since, until, limit, cursor, as_json) -> None:
    """Recent events, newest first, one line each."""
    from relay.admin.schemas import EventPageSchema
    from relay.store.search import search_events

    filters = _event_filter(route, status, email, text, since, until)
    page = search_events(_engine(_config()), filters, cursor=cursor, limit=limit)
    if as_json:
        _echo_json(EventPageSchema().dump(page))
        return
    for event in page.events:
        why = f"  {event.reason}" if event.reason else ""
        click.echo(
            f"{event.id}  {event.received_at:%Y-%m-%d %H:%M:%S}  {event.route}  "
            f"{event.status}  {event.email or '-'}  {event.rule or '-'}{why}"
        )
    if not page.events:
        click.echo("no events", err=True)
    if page.next_cursor:
        click.echo(f"more: --cursor {page.next_cursor}", err=True)


@main.command()
@click.argument("event_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for scripts.")
def show(event_id: str, as_json: bool) -> None:
    """One event: payload, matched rule, every delivery and every Kartra call."""
    from relay.admin.schemas import EventSchema
    from relay.store.search import get_event

    event = get_event(_engine(_config()), event_id)
    if event is None:
        _fail(LookupError(f"no event {event_id}"))
    if as_json:
        _echo_json(EventSchema().dump(event))
        return
    click.echo(f"{event.id}  {event.route}  received {event.received_at:%Y-%m-%d %H:%M:%S} UTC")
    click.echo(f"status: {event.status}" + (f" (rule {event.rule})" if event.rule else ""))
    if event.reason:
        click.echo(f"reason: {event.reason}")
    if event.awaiting_customer:
        click.echo(f"waiting for the lead email of customer {event.awaiting_customer}")
    click.echo("payload:")
    click.echo(_indent(json.dumps(event.payload, indent=2, ensure_ascii=False)))
    for delivery in event.deliveries:
        click.echo(
            f"delivery {delivery.id}  account {delivery.account}  {delivery.status}  "
            f"{delivery.attempts} attempt(s)"
            + (f"  error: {delivery.last_error}" if delivery.last_error else "")
        )
        for call in delivery.calls:
            click.echo(
                f"  call {call.number}  {call.started_at:%H:%M:%S}  HTTP {call.http_status}  "
                f"{call.outcome}  {call.duration_ms:.0f} ms"
                + ("  ambiguous retry: may repeat an earlier call" if call.ambiguous else "")
            )
            click.echo(_indent(json.dumps(call.request, ensure_ascii=False), 4))
            click.echo(_indent(json.dumps(call.response, ensure_ascii=False), 4))


def _indent(text: str, spaces: int = 2) -> str:
    return "\n".join(" " * spaces + line for line in text.splitlines())


@main.command()
@click.argument("event_ids", nargs=-1)
@_filter_options
@click.option("--stored", is_flag=True, help="Send the recorded plan again, not a new render.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for scripts.")
def replay(event_ids, route, status, email, text, since, until, stored, as_json) -> None:
    """Replay events by id, or every event matching the filters, with the current
    mappings (or, with --stored, the plans recorded at the time)."""
    from relay.admin.operations import replay_many
    from relay.admin.schemas import ReplayResultSchema
    from relay.store.search import event_ids as matching_ids

    config = _config()
    engine = _engine(config)
    has_filter = any((route, status, email, text, since, until))
    if bool(event_ids) == has_filter:
        raise click.UsageError("give event ids, or filters such as --status dead --since 1h")
    mappings = _mappings(config)
    filters = _event_filter(route, status, email, text, since, until)
    ids, more = (list(event_ids), 0) if event_ids else matching_ids(engine, filters)
    mode = "stored" if stored else "mapping"
    results = replay_many(engine, mappings, ids, mode, status=None if event_ids else status)
    if as_json:
        _echo_json({"results": ReplayResultSchema(many=True).dump(results), "more": more})
    for result in [] if as_json else results:
        if result.ok:
            click.echo(f"{result.event_id}: {result.status}, {result.deliveries} delivery(ies)")
        else:
            click.echo(f"{result.event_id}: not replayed: {result.error}", err=True)
    if not as_json and not results:
        click.echo("no events match", err=True)
    if not as_json and more:
        click.echo(f"{more} more match: run the command again for the next ones", err=True)
    if any(not r.ok for r in results):
        sys.exit(1)


@main.command()
@click.option("--since", type=Age(), help="Only deliveries that died in the last ...")
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for scripts.")
def retry(since, as_json: bool) -> None:
    """Queue every dead delivery again, carrying on where it stopped."""
    from relay.store.maintenance import retry_dead
    from relay.store.tables import utcnow

    requeued = retry_dead(_engine(_config()), since=utcnow() - since if since else None)
    if as_json:
        _echo_json([{"event_id": i.event_id, "deliveries": i.deliveries} for i in requeued])
        return
    for item in requeued:
        click.echo(f"{item.event_id}: {item.deliveries} dead delivery(ies) queued again")
    click.echo(f"{sum(i.deliveries for i in requeued)} delivery(ies) queued again")


@main.command()
@click.option("--older-than", "older_than", type=Age(), required=True, help="e.g. 30d")
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for scripts.")
def purge(older_than, as_json: bool) -> None:
    """Delete events received before that age, with their deliveries and Kartra calls
    (events still waiting for delivery are kept)."""
    from relay.store.maintenance import purge_older_than
    from relay.store.tables import utcnow

    purged = purge_older_than(_engine(_config()), utcnow() - older_than)
    if as_json:
        _echo_json({"purged": purged})
        return
    click.echo(f"{purged} event(s) purged")


@main.command()
@click.argument("event_ids", nargs=-1)
@click.option("--email", help="Every event about this email address.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for scripts.")
def redact(event_ids, email, as_json: bool) -> None:
    """Erase the personal data of events (GDPR): payload, headers, plans, Kartra calls."""
    from relay.store.maintenance import StoreConflict, UnknownEvents
    from relay.store.maintenance import redact as redact_events

    if bool(event_ids) == bool(email):
        raise click.UsageError("give event ids or --email: one of the two")
    try:
        done = redact_events(_engine(_config()), event_ids=list(event_ids) or None, email=email)
    except (StoreConflict, UnknownEvents) as exc:
        _fail(exc)
    if as_json:
        _echo_json({"redacted": done})
        return
    click.echo(f"{len(done)} event(s) redacted" + (": " + ", ".join(done) if done else ""))


def start_embedded_dispatcher(app) -> tuple[threading.Thread, object]:
    """The single-process mode: the dispatcher (with retention and the resuming of
    events waiting for an identity) as threads of the web process."""
    from relay.admin.dispatch_metrics import instrument
    from relay.admin.resume import Resume
    from relay.admin.retention import Retention
    from relay.dispatch.worker import Dispatcher

    relay = app.extensions["relay"]
    dispatcher = Dispatcher(relay.config, relay.engine, wake=relay.wake)
    instrument(dispatcher)
    Retention(relay.engine, relay.config.retention_days).start()
    Resume(relay.engine, lambda: relay.mappings).start()
    thread = threading.Thread(target=dispatcher.run, name="dispatcher", daemon=True)
    thread.start()
    return thread, dispatcher


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for scripts.")
@click.pass_context
def identities(ctx: click.Context, as_json: bool) -> None:
    """Sender customer ids and the lead emails they stand for; set one by hand."""
    if ctx.invoked_subcommand:
        return
    from relay.store.identities import all_identities

    known = all_identities(_engine(_config()))
    if as_json:
        _echo_json(
            {
                "identities": [
                    {
                        "route": i.route,
                        "account": i.account,
                        "customer_id": i.customer_id,
                        "email": i.email,
                        "updated_at": i.updated_at.isoformat(),
                    }
                    for i in known
                ]
            }
        )
        return
    for i in known:
        click.echo(f"{i.route} {i.account} {i.customer_id}: {i.email}")
    click.echo(f"{len(known)} identity(ies)")


@identities.command("set")
@click.argument("route")
@click.argument("customer_id")
@click.argument("email")
@click.option("--account", default="default", show_default=True, help="Kartra account name.")
def set_identity(route: str, customer_id: str, email: str, account: str) -> None:
    """Say which lead a customer id stands for: the dispatcher process replays the events
    waiting for it within seconds."""
    from relay.mapping.filters import email as normal_email
    from relay.mapping.model import is_email
    from relay.store.identities import fits, remember

    address, customer_id = normal_email(email), customer_id.strip()
    if not is_email(address):
        raise click.UsageError(f"{address!r} is not an email address")
    if not customer_id or not fits(customer_id, address):
        raise click.UsageError("give a customer id of 1 to 200 characters")
    config = _config()
    engine = _engine(config)
    mappings = _mappings(config)
    if route not in mappings:
        _fail(ValueError(f"no route {route!r} in {config.mappings_dir}"))
    _known_account_or_fail(engine, config, account, mappings)
    remember(engine, route, account, customer_id, address)
    click.echo(f"{route} {account} {customer_id}: {address}")
