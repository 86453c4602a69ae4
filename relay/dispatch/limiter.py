"""The per-App rate limit: never more than the limit in any window, and close to it.

Kartra allows 20 calls per second per App and counts them when they arrive. Three rules
together keep every 1-second window at or under the limit:

- **pacing**: each caller reserves the next slot, one `interval` (1/20 s padded by
  `margin`) after the previous one, and sleeps until it; callers spread out instead of
  going in a burst.
- **the last calls' times**: a slot says when a call may go, not when it went; a caller
  that woke late (a busy machine, a slow reservation) would bunch with the calls after
  it. So when its slot comes, the caller records the moment it goes, and goes only if
  the `burst` calls before it (20 at 20/s) went at least `span` (1 s plus the margin)
  ago; otherwise it waits for that. Any `burst + 1` calls are then a span apart.
- **when the calls were written**: a call leaves the relay some time after the limiter
  lets it go (the thread waits for the GIL, requests prepares the request, the machine
  is busy); up to 45 ms was measured at load 4.6, more than the margin. The client says
  when the request's last byte was written (`wrote`), and a call waits until the
  process's own call `burst` before it was written a `span` ago.

Waiting here never spends a delivery's retries.

- `RateLimiter` keeps them in process memory: the single-process default.
- `SharedRateLimiter` keeps the first two in the App's PostgreSQL row, each step one
  UPDATE whose row lock orders concurrent callers, timed by the database server's
  clock, so every worker process on every machine shares the App's one budget; the
  third in process memory, for the process's own calls, and a call written more than
  `LATE` after it went also moves its time in the row to when it was written, for the
  other processes' calls (one more UPDATE, for late calls only).

Clocks and sleep are injectable, so the pacing is tested without waiting.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from relay.logs import get_logger
from relay.store.disconnects import retried_on_disconnect

log = get_logger("relay.dispatch")

# 3 % of the limit is left unused: room for calls that take different times to reach
# Kartra after they go.
MARGIN = 0.03


def pacing_interval(rate: float, margin: float) -> float:
    if rate <= 0:
        raise ValueError("rate must be positive")
    return (1.0 + margin) / rate


def window(rate: float, margin: float) -> tuple[int, float]:
    """(burst, span): at most `burst` calls in any `span` seconds. 20/s -> 20 in 1.03 s;
    below one call a second, one call per padded interval."""
    burst = max(1, math.floor(rate))
    return burst, burst * pacing_interval(rate, margin)


class Limiter:
    """The two steps both limiters take: sleep until the caller's slot, then until the
    App's last calls leave room; where the slot and the times are kept is theirs.

    Both also keep this process's own last `burst` calls (`_written`), each at the time
    it was let go until the client says when it was written (`wrote`, later only)."""

    def __init__(
        self,
        rate: float,
        margin: float,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ):
        self.interval = pacing_interval(rate, margin)
        self.burst, self.span = window(rate, margin)
        self.clock = clock
        self.sleep = sleep
        self._written: deque[list[float]] = deque(maxlen=self.burst)
        self._written_lock = threading.Lock()
        self._mine = threading.local()  # the caller's last call: its entry in _written

    def acquire(self) -> float:
        """Block until this caller may send, and count it as sent; returns the seconds
        waited."""
        start = self.clock()
        wait = self._reserve()
        if wait > 0:
            self.sleep(wait)
        while (wait := self._go()) > 0:
            self.sleep(wait)
        return self.clock() - start

    def wrote(self) -> None:
        """The caller's last call (the one its last `acquire` let go) was written just
        now: it counts from now for the calls after it."""
        entry = getattr(self._mine, "entry", None)
        if entry is not None:
            with self._written_lock:
                entry[0] = max(entry[0], self.clock())

    def _until_written_room(self, now: float) -> float:
        """Seconds until this process's call `burst` before the next one was written a
        `span` ago; the caller holds `_written_lock`."""
        if len(self._written) < self.burst:
            return 0.0
        return self._written[0][0] + self.span - now

    def _count_written(self, now: float) -> None:
        """Count the caller's call as written at `now` until it says when it was; the
        caller holds `_written_lock`."""
        self._mine.entry = [now]
        self._written.append(self._mine.entry)

    def _reserve(self) -> float:
        """Take the next slot; the seconds until it."""
        raise NotImplementedError

    def _go(self) -> float:
        """Count this call as sent now if the last `burst` calls went a `span` ago, and
        return 0; else the seconds until they did."""
        raise NotImplementedError


class RateLimiter(Limiter):
    def __init__(
        self,
        rate: float,
        *,
        margin: float = MARGIN,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        super().__init__(rate, margin, clock, sleep)
        self._next = float("-inf")
        self._lock = threading.Lock()

    def _reserve(self) -> float:
        with self._lock:
            now = self.clock()
            slot = max(self._next, now)
            self._next = slot + self.interval
        return slot - now

    def _go(self) -> float:
        """In one process the calls' times are the App's: `_written` is the whole record."""
        with self._written_lock:
            now = self.clock()
            wait = self._until_written_room(now)
            if wait > 0:
                return wait
            self._count_written(now)
            return 0.0


# Both statements commit without waiting for the WAL flush (`synchronous_commit` off
# for their own transaction only): a slot or a call time lost in a database crash
# costs nothing, while waiting for the disk would delay the call by an uneven few ms.
# Both read the time once the App's row is locked (`locked` comes first): read before,
# it would be as old as the wait for another caller's lock.
_RESERVE = text(
    """
    WITH locked AS (SELECT FROM rate_limits WHERE key = :key FOR UPDATE),
    now AS (SELECT clock_timestamp() AS t,
                   set_config('synchronous_commit', 'off', true) AS unflushed
            FROM locked)
    UPDATE rate_limits
    SET next_at = GREATEST(rate_limits.next_at, now.t) + make_interval(secs => :interval)
    FROM now
    WHERE rate_limits.key = :key
    RETURNING EXTRACT(EPOCH FROM rate_limits.next_at) - :interval AS slot,
              EXTRACT(EPOCH FROM (rate_limits.next_at - now.t)) - :interval AS wait
    """
)
# `sent` holds the epoch times (database clock) of the App's last `burst` calls, oldest
# first. A caller goes when there are fewer, or the oldest went a span ago, and appends
# its own time, dropping what falls out of the window; otherwise it learns how long to
# wait. A call recorded earlier than it went (the time read before the lock) would let
# the call `burst` after it go that much too early. `room_at` is when the next call may
# go (NULL: at once), as the row stands after this statement. With `reserve`, a caller
# that goes also reserves the next slot, as `_RESERVE` would, for the caller of its
# process waiting behind it: `slot` (NULL when it did not go).
_GO = text(
    """
    WITH locked AS (SELECT sent FROM rate_limits WHERE key = :key FOR UPDATE),
    now AS (SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8 AS t,
                   set_config('synchronous_commit', 'off', true) AS unflushed
            FROM locked),
    went AS (
        UPDATE rate_limits
        SET sent = (rate_limits.sent || now.t)[
            GREATEST(1, cardinality(rate_limits.sent) + 2 - :burst):],
            next_at = CASE WHEN :reserve
                THEN GREATEST(rate_limits.next_at, to_timestamp(now.t))
                     + make_interval(secs => :interval)
                ELSE rate_limits.next_at END
        FROM now
        WHERE rate_limits.key = :key
          AND (cardinality(rate_limits.sent) < :burst
               OR rate_limits.sent[cardinality(rate_limits.sent) + 1 - :burst] + :span <= now.t)
        RETURNING rate_limits.sent[cardinality(rate_limits.sent) + 1 - :burst] + :span
                  AS room_at,
                  CASE WHEN :reserve
                      THEN EXTRACT(EPOCH FROM rate_limits.next_at)::float8 - :interval
                  END AS slot
    )
    SELECT EXISTS (SELECT FROM went) AS went,
           l.sent[cardinality(l.sent) + 1 - :burst] + :span - now.t AS wait,
           COALESCE((SELECT room_at FROM went),
                    l.sent[cardinality(l.sent) + 1 - :burst] + :span) AS room_at,
           now.t,
           (SELECT slot FROM went) AS slot
    FROM locked l, now
    """
)
# A call written later than this after it went moves its time in the App's row: well
# inside the margin (30 ms a span at 20/s), and more than most calls take, so most cost
# no statement.
LATE = 0.005
# The App's row with one call's time moved later (from when it went to when it was
# written), kept oldest first.
_WRITTEN = text(
    """
    WITH unflushed AS (SELECT set_config('synchronous_commit', 'off', true))
    UPDATE rate_limits
    SET sent = ARRAY(SELECT t FROM unnest(array_replace(sent, :went, :written)) AS t
                     ORDER BY t)
    FROM unflushed
    WHERE key = :key
    """
)
# Clocks of the database and of this machine that agree this closely are the same
# clock (or NTP-synchronised ones): then the slot's own time is the better target.
CLOCKS_AGREE = 0.25


class SharedRateLimiter(Limiter):
    """The slot's wait is aimed at its time on this machine's clock, measured after the
    reservation, so how long the reservation took does not shift the call; a clock that
    disagrees with the database's falls back to the wait the database computed.

    The callers of one process take their turns one at a time: a caller that goes while
    another of its process waits behind it reserves that one's slot in the same
    statement. A backlog then costs one statement a call, not two; every call still
    takes its slot from the App's row in order, and goes only once the row says so."""

    def __init__(
        self,
        engine: Engine,
        key: str,
        rate: float,
        *,
        margin: float = MARGIN,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        super().__init__(rate, margin, clock, sleep)
        self.engine = engine
        self.key = key
        self._room_at = float("-inf")
        self._room_lock = threading.Lock()
        # The caller whose turn it is holds _turn while it waits for its slot and goes;
        # _waiting counts the callers behind it, and _slot_at is when the slot reserved
        # for the next of them comes (this machine's clock), guarded by _turn.
        self._turn = threading.Lock()
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        self._slot_at: float | None = None

    def acquire(self) -> float:
        start = self.clock()
        with self._waiting_lock:
            self._waiting += 1
        with self._turn:
            with self._waiting_lock:
                self._waiting -= 1
            slot_at, self._slot_at = self._slot_at, None
            wait = self._reserve() if slot_at is None else slot_at - self.clock()
            if wait > 0:
                self.sleep(wait)
            while (wait := self._own_room()) > 0:
                self.sleep(wait)
            while (wait := self._go(reserve_next=self._waiting > 0)) > 0:
                self.sleep(wait)
            with self._written_lock:
                self._count_written(self.clock())
        return self.clock() - start

    def wrote(self) -> None:
        """The caller's last call was written just now; written `LATE` or more after it
        went, it also counts from now in the App's row, for the other processes' calls
        (this one's wait for their own in `_own_room`). The call is on its way whatever
        becomes of that statement: a failure is logged, not raised."""
        super().wrote()
        went = getattr(self._mine, "went", None)
        if went is None:
            return
        self._mine.went = None
        went_at, answered_at = went
        late = self.clock() - answered_at
        if late < LATE:
            return
        try:
            self._move(went_at, went_at + late)
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc)  # the driver's words, not the SQL
            log.warning("rate_limit_written_time_not_recorded", key=self.key, error=reason)

    # Run again after a lost connection when the first run was applied, it finds the
    # time it moved no longer there, and changes nothing.
    @retried_on_disconnect
    def _move(self, went_at: float, written_at: float) -> None:
        """Replace the call's time `went_at` in the App's row by `written_at` (database
        clock); a call that already left the row's last `burst` changes nothing."""
        with self._autocommit() as conn:
            conn.execute(_WRITTEN, {"key": self.key, "went": went_at, "written": written_at})

    def _own_room(self) -> float:
        """The row knows when each call went, not when it was written: this process's
        own calls, written late, are waited for here. The process's callers take their
        turns (`_turn`), so no other can go between this and `_go`."""
        with self._written_lock:
            return self._until_written_room(self.clock())

    def _autocommit(self):
        """Each statement its own transaction: no BEGIN and COMMIT round trips."""
        return self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    # A step run again after a lost connection, when the first run was applied, only
    # leaves the App one slot emptier or one call more counted: stricter, never looser.
    @retried_on_disconnect
    def _reserve(self) -> float:
        with self._autocommit() as conn:
            row = conn.execute(_RESERVE, {"interval": self.interval, "key": self.key}).first()
            if row is None:
                conn.execute(
                    text(
                        "INSERT INTO rate_limits (key, next_at) VALUES (:key, "
                        "clock_timestamp()) ON CONFLICT (key) DO NOTHING"
                    ),
                    {"key": self.key},
                )
                row = conn.execute(_RESERVE, {"interval": self.interval, "key": self.key}).first()
        return self._aimed(float(row.slot), float(row.wait))

    # Run again after a lost connection when the first run was applied, it also takes
    # another slot: one the App leaves empty.
    @retried_on_disconnect
    def _go(self, *, reserve_next: bool = False) -> float:
        """A caller whose slot came before the App's last calls left room (a slot paced
        exactly a span after a call that went late) would be refused: about every other
        call was, at one more round trip each. The row's last answer says when room
        comes, at the earliest (later calls only move it on), so such a caller waits for
        it here without asking; the row still decides. With `reserve_next`, a caller
        that goes also reserves the next caller's slot (`_slot_at`)."""
        ahead = self._room_at - self.clock()
        if ahead > 0:
            return ahead
        values = {
            "burst": self.burst,
            "span": self.span,
            "key": self.key,
            "interval": self.interval,
            "reserve": reserve_next,
        }
        with self._autocommit() as conn:
            went, wait, room_at, now, slot = conn.execute(_GO, values).one()
        if went:
            # the caller's call: when it went (database clock), and when the answer
            # saying so came (this machine's clock), until `wrote`
            self._mine.went = (now, self.clock())
        if room_at is not None:
            room_at = self.clock() + self._aimed(room_at, room_at - now)
            with self._room_lock:
                self._room_at = max(self._room_at, room_at)
        if slot is not None:
            self._slot_at = self.clock() + self._aimed(slot, slot - now)
        return 0.0 if went else max(float(wait or 0), 0.001)

    def _aimed(self, at: float, wait: float) -> float:
        """Seconds until `at` (database clock) on this machine's clock when the two
        agree, else `wait` (as the database computed it)."""
        aimed = at - self.clock()
        return aimed if abs(aimed - wait) < CLOCKS_AGREE else wait


def rate_limiter_for(engine: Engine, app_id: str | None, rate: float) -> Limiter:
    """Shared through the database on PostgreSQL; in process memory on SQLite, where
    the relay runs as one process."""
    if engine.dialect.name == "postgresql":
        return SharedRateLimiter(engine, f"kartra-app:{app_id or 'dry-run'}", rate)
    return RateLimiter(rate)
