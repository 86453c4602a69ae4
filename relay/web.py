"""The Flask application factory. Nothing happens at import; `create_app()` does it all."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from flask import Flask, current_app, jsonify, request
from gunicorn.http.errors import NoMoreData, ParseException
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from relay import logs
from relay.admin.health import bp as health_bp
from relay.config import Config
from relay.gunicorn_worker import SlowClient
from relay.ingest.limits import throttle
from relay.ingest.routes import bp as ingest_bp
from relay.mapping import Mapping, load_mappings
from relay.store import connect

log = logs.get_logger("relay")


@dataclass
class Relay:
    """What every request handler and the embedded dispatcher share."""

    config: Config
    engine: Engine
    mappings: dict[str, Mapping]
    wake: threading.Event = field(default_factory=threading.Event)


def create_app(config: Config | None = None, engine: Engine | None = None) -> Flask:
    """Build the app; raises `ConfigError` or `MappingError` for a bad set-up."""
    config = config or Config.from_env()
    mappings = load_mappings(config.mappings_dir)
    logs.configure_for(config, mappings.values())
    relay = Relay(config, engine or connect(config.database_url), mappings)
    app = Flask("relay")
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.json.sort_keys = False
    app.extensions["relay"] = relay
    app.register_blueprint(ingest_bp)
    if config.ingest_rate_limit_per_ip or config.ingest_rate_limit_per_route:
        app.before_request(throttle)
    app.register_blueprint(health_bp)
    if config.admin_token:
        _register_admin(app)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(OperationalError, _storage_error)
    app.register_error_handler(SlowClient, _slow_client)
    app.register_error_handler(NoMoreData, _body_broken)
    app.register_error_handler(ParseException, _body_broken)
    announce(relay)
    return app


def _register_admin(app: Flask) -> None:
    """The API, the dashboard and /metrics, imported only when ADMIN_TOKEN turns them on:
    apispec, prometheus_client and the queries behind them cost every web process
    memory it would never use otherwise."""
    from relay.admin.api import bp as api_bp
    from relay.admin.dashboard import bp as dashboard_bp
    from relay.admin.metrics import bp as metrics_bp

    app.register_blueprint(api_bp)
    app.register_blueprint(dashboard_bp)
    app.register_blueprint(metrics_bp)


def announce(relay: Relay) -> None:
    config = relay.config
    log.info(
        "relay_configured",
        mode=config.mode,
        kartra_url=config.kartra_url,
        database=relay.engine.url.render_as_string(hide_password=True),
        routes=sorted(relay.mappings),
        accounts=sorted(config.accounts),
        admin="on" if config.admin_token else "off (ADMIN_TOKEN not set)",
    )
    if config.dry_run:
        log.warning(
            "dry_run",
            detail="no Kartra credentials: calls are recorded, not sent; "
            "set KARTRA_APP_ID, KARTRA_API_KEY and KARTRA_API_PASSWORD to send",
        )
    for route, mapping in sorted(relay.mappings.items()):
        if mapping.verify == "none":
            log.warning(
                "route_unverified",
                route=route,
                detail="verify: none - anyone who knows the URL can post events",
            )


def _http_error(exc: HTTPException):
    if exc.code == 413:
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        return jsonify(error=f"body larger than {limit} bytes (MAX_BODY_BYTES)"), 413
    headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]  # Allow
    return jsonify(error=exc.description), exc.code, headers


def _slow_client(exc: SlowClient):
    log.info("request_too_slow", path=request.path, timeout=exc.timeout)
    return jsonify(error=f"{exc} (REQUEST_READ_TIMEOUT)"), 408, {"Connection": "close"}


def _body_broken(exc: NoMoreData | ParseException):
    """A streamed (chunked) body that stopped, or whose framing is wrong, as the app
    reads it: nothing is stored, and the connection cannot carry another request."""
    reason = "the body ended before it was complete" if isinstance(exc, NoMoreData) else str(exc)
    log.info("request_body_broken", path=request.path, reason=reason)
    return jsonify(error=reason), 400, {"Connection": "close"}


# Seconds a client is asked to wait after a 503 (the database away).
STORAGE_RETRY_AFTER = 30


def _storage_error(exc: OperationalError):
    log.error("storage_unavailable", error=str(exc.orig))
    answer = jsonify(error="storage unavailable; retry later")
    return answer, 503, {"Retry-After": str(STORAGE_RETRY_AFTER)}
