"""structlog set-up: JSON lines on stdout, with secrets removed before rendering.

Every line passes `redact`, which replaces any configured secret value found anywhere
in the event dict. Emails are masked where they are logged (`mask_email`), since a log
line needs to say *which* lead without publishing the address.
"""

from __future__ import annotations

import functools
import html
import json
import logging
import re
import sys
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_plus

import structlog

if TYPE_CHECKING:
    from relay.config import Config
    from relay.mapping import Mapping

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


@functools.cache
def secret_forms(secret: str) -> frozenset[str]:
    """`secret` as written and as an answer may echo it: form-encoded (a space as `+`),
    percent-encoded, HTML-escaped, JSON-escaped. An error page that quotes the request's
    body shows the key and password form-encoded."""
    escaped = json.dumps(secret)[1:-1]
    return frozenset(
        (secret, quote_plus(secret), quote(secret, safe=""), html.escape(secret), escaped)
    )


class Redactor:
    """A structlog processor that replaces every known secret value, in any of its
    `secret_forms`, with `***`."""

    def __init__(self, secrets: Iterable[str] = ()):
        forms = {form for s in secrets if s and len(s) >= 4 for form in secret_forms(s)}
        self.secrets = sorted(forms, key=len, reverse=True)

    def __call__(self, logger, method_name, event_dict):
        if not self.secrets:
            return event_dict
        return {key: self._clean(value) for key, value in event_dict.items()}

    def _clean(self, value):
        if isinstance(value, str):
            for secret in self.secrets:
                if secret in value:
                    value = value.replace(secret, "***")
            return value
        if isinstance(value, dict):
            return {k: self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(v) for v in value]
        return value


class _Stdout:
    """Where the rendered lines go: whatever `sys.stdout` is when the line is written
    (gunicorn's inherited stdout, a test's captured one), each line and its newline in
    one write, flushed. structlog's `PrintLogger` would keep the stdout of the moment
    it was built, which a logger built once (`_Logger`) must not."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def msg(self, message: str) -> None:
        with self._lock:
            out = sys.stdout
            out.write(message + "\n")
            out.flush()

    log = debug = info = warn = warning = error = exception = critical = fatal = msg


_STDOUT = _Stdout()


def configure(level: str = "info", secrets: Iterable[str] = ()) -> None:
    """Nothing in the relay binds context variables, so structlog's `merge_contextvars`
    is not in the chain."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            Redactor(secrets),
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=lambda *_args: _STDOUT,
        cache_logger_on_first_use=False,
    )


def configure_for(config: Config, mappings: Iterable[Mapping] = ()) -> None:
    """JSON logs that never show a Kartra credential, the admin token or a route's
    webhook secret, whatever code logs them by mistake."""
    secrets = [config.admin_token or ""]
    for account in config.accounts.values():
        secrets += [account.api_key, account.api_password]
    for mapping in mappings:
        if isinstance(mapping.verify, dict):
            secrets += [str(s) for s in mapping.verify.get("secrets", ())]
    configure(config.log_level, secrets)


def mask_email(email: str | None) -> str | None:
    """`jane.doe@example.com` -> `j***@example.com`: enough to find the lead, not to mail it."""
    if not email:
        return email
    local, _, domain = str(email).partition("@")
    return f"{local[:1]}***@{domain}" if domain else f"{local[:1]}***"


_EMAIL_LIKE = re.compile(r"[^\s'\"]*@[^\s'\"]*")


def mask_emails_in(text: str | None) -> str | None:
    """Every word with an @ in `text` masked as `mask_email` does: a rejection reason
    quotes the value it refused (`lead.email 'jane.doe@gmail' is not an email address`),
    and the log promises masked addresses."""
    return _EMAIL_LIKE.sub(lambda word: mask_email(word.group()), text) if text else text


class _Logger:
    """What `get_logger` returns: structlog's bound logger for the configuration in
    force, built once per configuration. structlog's own lazy proxy builds one on every
    call; its `cache_logger_on_first_use` would keep the first one for ever, past a
    later `configure()`. The processors list is compared
    by identity: `structlog.testing.capture_logs` changes it in place, which a built
    logger sees, since it holds that same list."""

    __slots__ = ("_name", "_built")

    def __init__(self, name: str) -> None:
        self._name = name
        self._built: tuple[tuple, object] | None = None

    def _logger(self):
        config = structlog.get_config()
        key = (
            config["processors"],
            config["wrapper_class"],
            config["context_class"],
            config["logger_factory"],
        )
        built = self._built
        if built is None or any(a is not b for a, b in zip(built[0], key, strict=True)):
            built = self._built = (key, structlog.get_logger(self._name).bind())
        return built[1]

    def __getattr__(self, method: str):
        return getattr(self._logger(), method)


def get_logger(name: str = "relay") -> _Logger:
    return _Logger(name)
