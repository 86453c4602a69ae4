"""structlog set-up: JSON lines on stdout, with secrets removed before rendering.

Every line passes `redact`, which replaces any configured secret value found anywhere
in the event dict. Emails are masked where they are logged (`mask_email`), since a log
line needs to say *which* lead without publishing the address.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

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


class Redactor:
    """A structlog processor that replaces every known secret value with `***`."""

    def __init__(self, secrets: Iterable[str] = ()):
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

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


def configure(level: str = "info", secrets: Iterable[str] = ()) -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            Redactor(secrets),
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(),
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


def get_logger(name: str = "relay"):
    return structlog.get_logger(name)
