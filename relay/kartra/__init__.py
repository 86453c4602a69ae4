"""Kartra's inbound API: form encoding, the client that delivers plans, and its errors.

The fake Kartra used by tests and demos lives in `relay.kartra.fake` and is not
imported here, so that importing the client never builds a Flask app. The client
itself (with requests and urllib3) is imported the first time one of its names is
used: the mapping engine checks files against `relay.kartra.commands`, so every web
process imports this package, and it never calls Kartra.
"""

from relay.kartra.commands import ACTIONS, LEAD_COMMANDS, LEAD_FIELDS, Command
from relay.kartra.form import decode, encode

_CLIENT_NAMES = {
    "AccountError",
    "ActionConfigError",
    "ActionResult",
    "Credentials",
    "DataError",
    "KartraCall",
    "KartraClient",
    "KartraError",
    "Outcome",
    "TransientError",
    "build_params",
    "classify",
    "mask",
    "parse_response",
}


def __getattr__(name: str):
    if name in _CLIENT_NAMES:
        from relay.kartra import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ACTIONS",
    "LEAD_COMMANDS",
    "LEAD_FIELDS",
    "Command",
    "decode",
    "encode",
    *sorted(_CLIENT_NAMES),
]
