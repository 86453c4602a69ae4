"""Kartra's inbound API: form encoding, the client that delivers plans, and its errors.

The fake Kartra used by tests and demos lives in `relay.kartra.fake` and is not
imported here, so that importing the client never builds a Flask app.
"""

from relay.kartra.client import (
    AccountError,
    ActionConfigError,
    ActionResult,
    Credentials,
    DataError,
    KartraCall,
    KartraClient,
    KartraError,
    Outcome,
    TransientError,
    build_params,
    classify,
    mask,
    parse_response,
)
from relay.kartra.commands import ACTIONS, LEAD_COMMANDS, LEAD_FIELDS, Command
from relay.kartra.form import decode, encode

__all__ = [
    "ACTIONS",
    "LEAD_COMMANDS",
    "LEAD_FIELDS",
    "AccountError",
    "ActionConfigError",
    "ActionResult",
    "Command",
    "Credentials",
    "DataError",
    "KartraCall",
    "KartraClient",
    "KartraError",
    "Outcome",
    "TransientError",
    "build_params",
    "classify",
    "decode",
    "encode",
    "mask",
    "parse_response",
]
