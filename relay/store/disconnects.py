"""Surviving a dead connection without pinging before every use.

An engine built with `connect(url, pre_ping=False)` hands out pooled connections as
they are. One that died while pooled (PostgreSQL restarted, the connection was
terminated) fails its next statement; SQLAlchemy then marks the error
`connection_invalidated` and invalidates the pool, so every connection opened before
the failure is replaced at its next checkout. `retried_on_disconnect` runs the
operation once more on a fresh connection, as the pre-ping would have reconnected.

Only for operations that are safe to run twice: the failed run may have been applied
when the connection died after its COMMIT (or its autocommit statement) was sent and
before the answer came back. Each decorated function says why running it again is
harmless.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from sqlalchemy.exc import DBAPIError

P = ParamSpec("P")
T = TypeVar("T")


def retried_on_disconnect(operation: Callable[P, T]) -> Callable[P, T]:
    @functools.wraps(operation)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return operation(*args, **kwargs)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
        return operation(*args, **kwargs)

    return run
