"""The two errors a mapping can raise, and the problem record that carries a fix hint.

- `MappingError`: a mapping file is wrong. Raised once by `load_mappings` with every
  problem of every file, so an operator fixes them all in one round.
- `RenderError`: an event cannot be rendered (a missing field, a failed `lookup`, a
  sandbox refusal...). `Mapping.render` turns it into a "rejected" result with a
  reason; only `Mapping.event_id` lets it out, because its caller has a fallback.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong in a mapping file: where (`file`, key `path`), what, and a hint."""

    file: str
    path: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        where = f"{self.file}: {self.path}: " if self.path else f"{self.file}: "
        return where + self.message + (f" ({self.hint})" if self.hint else "")


class MappingError(Exception):
    """Mapping files failed validation; `.problems` lists every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class RenderError(Exception):
    """An event could not be rendered by a mapping; the message says where and why."""


class UnknownIdentity(RenderError):
    """`lead_email` met a customer id no event has taught yet: the event can be rendered
    again once one does (senders such as Paddle do not keep their events in order)."""

    def __init__(self, customer_id: str):
        super().__init__(f"no lead identity for customer {customer_id}")
        self.customer_id = customer_id
