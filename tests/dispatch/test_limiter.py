import threading
import time

import pytest
from sqlalchemy import event, text
from structlog.testing import capture_logs

from relay.dispatch.backoff import Backoff
from relay.dispatch.limiter import RateLimiter, SharedRateLimiter
from relay.store import connect, migrate


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        assert seconds > 0
        self.now += seconds


def starts_with(limiter, clock, calls):
    starts = []
    for _ in range(calls):
        limiter.acquire()
        starts.append(clock.now)
    return starts


def max_in_any_window(starts, window=1.0):
    return max(sum(1 for t in starts if s <= t < s + window) for s in starts)


@pytest.mark.parametrize("rate", [1, 5, 20, 50])
def test_never_more_than_the_rate_in_any_second(rate):
    clock = FakeClock()
    limiter = RateLimiter(rate, clock=clock, sleep=clock.sleep)
    starts = starts_with(limiter, clock, rate * 5)
    assert 0.95 * rate <= max_in_any_window(starts) <= rate
    # and it does not waste the budget: calls are one padded interval apart
    assert starts[-1] - starts[0] == pytest.approx((rate * 5 - 1) * 1.03 / rate)


class LateClock(FakeClock):
    """A busy machine: every `every`-th sleep overshoots by `late` seconds."""

    def __init__(self, late, every):
        super().__init__()
        self.late, self.every, self.sleeps = late, every, 0

    def sleep(self, seconds):
        super().sleep(seconds)
        self.sleeps += 1
        if self.sleeps % self.every == 0:
            self.now += self.late


@pytest.mark.parametrize("late", [0.01, 0.05, 0.2, 0.9])
def test_a_caller_that_wakes_late_does_not_bunch_with_the_calls_after_it(late):
    # Slots alone would let the calls after a late one go on their own slots, closer
    # than a second to it: 21 in a window. The times of the last 20 calls prevent it.
    clock = LateClock(late, every=7)
    limiter = RateLimiter(20, clock=clock, sleep=clock.sleep)
    starts = starts_with(limiter, clock, 200)
    assert max_in_any_window(starts) <= 20
    # and it catches up: the late calls cost no more than their lateness
    assert starts[-1] - starts[0] <= 199 * 1.03 / 20 + (clock.sleeps // 7) * late


@pytest.mark.parametrize("late", [0.0, 0.1])
def test_a_call_written_late_holds_the_call_a_burst_after_it_from_when_it_was_written(late):
    # Kartra counts a call when it arrives: one whose request was written `late` after
    # the limiter let it go moves the earliest the call 5 after it may go by as much.
    clock = FakeClock()
    limiter = RateLimiter(5, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    first = clock.now
    clock.now += late
    limiter.wrote()
    for _ in range(4):
        limiter.acquire()
        limiter.wrote()
    limiter.acquire()
    assert clock.now == pytest.approx(first + late + 1.03)


def test_wrote_without_a_call_of_its_own_changes_nothing():
    clock = FakeClock()
    limiter = RateLimiter(1, clock=clock, sleep=clock.sleep)
    limiter.wrote()
    limiter.acquire()
    assert clock.now == 1000.0


def test_a_window_may_fill_as_fast_as_the_pacing_allows_after_a_quiet_spell():
    clock = FakeClock()
    limiter = RateLimiter(20, margin=0, clock=clock, sleep=clock.sleep)
    starts = starts_with(limiter, clock, 20)
    clock.now += 0.5
    starts += starts_with(limiter, clock, 20)
    assert max_in_any_window(starts) == 20


def test_below_one_call_per_second():
    clock = FakeClock()
    limiter = RateLimiter(0.5, margin=0, clock=clock, sleep=clock.sleep)
    starts = starts_with(limiter, clock, 3)
    assert [b - a for a, b in zip(starts, starts[1:], strict=False)] == [2.0, 2.0]


def test_acquire_reports_the_wait_and_idle_time_is_not_banked():
    clock = FakeClock()
    limiter = RateLimiter(2, margin=0, clock=clock, sleep=clock.sleep)
    assert limiter.acquire() == 0
    assert limiter.acquire() == pytest.approx(0.5)
    clock.now += 10
    assert limiter.acquire() == 0
    assert limiter.acquire() == pytest.approx(0.5)


def test_threads_share_the_budget():
    limiter = RateLimiter(1000)
    done = []

    def work():
        for _ in range(50):
            limiter.acquire()
            done.append(1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert len(done) == 200


def test_backoff_spans_about_three_days_then_gives_up():
    backoff = Backoff()
    total_hours = backoff.total().total_seconds() / 3600
    assert 60 <= total_hours <= 84
    assert not backoff.exhausted(backoff.max_attempts - 1)
    assert backoff.exhausted(backoff.max_attempts)


def test_backoff_grows_and_is_jittered_within_bounds():
    import random

    backoff = Backoff()
    rand = random.Random(7)
    delays = [backoff.delay(n, rand).total_seconds() for n in range(1, 12)]
    for n, delay in enumerate(delays, start=1):
        base = min(30 * 2 ** (n - 1), 6 * 3600)
        assert 0.75 * base <= delay <= 1.25 * base
    assert len({round(d) for d in delays}) == len(delays)


@pytest.fixture
def pg_engine(postgres):
    """A migrated PostgreSQL database of its own: where the shared limiter keeps the App's
    row."""
    engine = connect(postgres.new_database())
    migrate(engine)
    yield engine
    engine.dispose()


def go_at_once(limiter: SharedRateLimiter, calls: int) -> None:
    """`calls` calls reserved and gone without sleeping (their callers all woke late,
    together)."""
    for _ in range(calls):
        limiter._reserve()
        assert limiter._go() == 0


def sent_times(engine, key: str) -> list[float]:
    """The App's row's times of its last calls, oldest first."""
    with engine.connect() as conn:
        sent = conn.execute(text("SELECT sent FROM rate_limits WHERE key = :key"), {"key": key})
        return sent.scalar_one()


def test_shared_limiter_paces_every_process_through_postgresql(pg_engine):
    slots = []

    def sleep(seconds):
        slots.append(time.time() + seconds)

    # two limiters stand for two worker processes sharing one App
    limiters = [SharedRateLimiter(pg_engine, "kartra-app:x", 20, sleep=sleep) for _ in range(2)]
    for i in range(10):
        limiters[i % 2].acquire()
    # each slot is one interval after the previous one, whoever reserved it (the first
    # call goes at once: no sleep)
    steps = [b - a for a, b in zip(slots, slots[1:], strict=False)]
    assert len(steps) == 8
    assert all(step == pytest.approx(1.03 / 20, abs=0.002) for step in steps)


def test_shared_limiter_holds_a_call_until_the_apps_last_calls_leave_room(pg_engine):
    # one process sent its 5 calls at once
    go_at_once(SharedRateLimiter(pg_engine, "kartra-app:z", 5), 5)
    # another process's next call waits until the oldest of them is a span old
    second = SharedRateLimiter(pg_engine, "kartra-app:z", 5)
    wait = second._go()
    assert 0.9 < wait <= 1.03
    started = time.monotonic()
    second.acquire()
    assert wait - 0.05 <= time.monotonic() - started <= wait + 0.5
    times = sent_times(pg_engine, "kartra-app:z")
    # only the last 5 are kept, oldest first; the first one sent went at once with the
    # one dropped, so the newest is a span after it, give or take those moments
    assert len(times) == 5 and times == sorted(times)
    assert times[-1] - times[0] >= 1.0


def test_a_call_the_app_has_no_room_for_yet_waits_without_asking_again(pg_engine):
    """The row's answer says when the App's last calls leave room: a caller of the same
    process that comes earlier waits for it without a round trip to be refused."""
    limiter = SharedRateLimiter(pg_engine, "kartra-app:w", 5)
    go_at_once(limiter, 5)
    statements = []
    event.listen(pg_engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    wait = limiter._go()
    assert 0.9 < wait <= 1.03
    assert statements == []


def test_a_machine_clock_far_from_the_databases_falls_back_to_its_wait(pg_engine):
    waits = []
    skewed = SharedRateLimiter(
        pg_engine, "kartra-app:y", 20, clock=lambda: time.time() + 3600, sleep=waits.append
    )
    for _ in range(5):
        skewed.acquire()
    # the waits are the database's: a growing fraction of a second, not an hour
    assert len(waits) == 4 and waits == sorted(waits)
    assert all(0 < wait < 5 * 1.03 / 20 for wait in waits)


def test_a_call_that_waited_for_another_callers_lock_counts_from_when_it_went(pg_engine):
    limiter = SharedRateLimiter(pg_engine, "kartra-app:w", 20, sleep=lambda seconds: None)
    limiter.acquire()
    # another process holds the App's row (a backend descheduled mid-statement) while
    # this caller's go waits for it
    with pg_engine.connect() as holder:
        holder.execute(text("SELECT 1 FROM rate_limits WHERE key = 'kartra-app:w' FOR UPDATE"))
        going = threading.Thread(target=limiter._go)
        going.start()
        time.sleep(0.3)
        released = holder.execute(text("SELECT EXTRACT(EPOCH FROM clock_timestamp())")).scalar()
        holder.commit()
        going.join(5)
    went = sent_times(pg_engine, "kartra-app:w")[-1]
    # counted from before the wait, the call would let the one 20 after it go 0.3 s early
    assert went >= float(released)


def test_callers_of_one_process_queued_at_the_limiter_cost_one_statement_a_call(pg_engine):
    """While another caller of the process waits behind it, a caller that goes reserves
    that one's slot in the same statement; the calls still go one interval apart."""
    limiter = SharedRateLimiter(pg_engine, "kartra-app:q", 50)
    statements = []

    def count(conn, cursor, statement, *args):
        if "went AS" in statement:
            statements.append("go")
        elif "next_at = GREATEST" in statement:
            statements.append("reserve")

    together = threading.Barrier(6)

    def calls():
        together.wait()
        for _ in range(5):
            limiter.acquire()

    event.listen(pg_engine, "before_cursor_execute", count)
    threads = [threading.Thread(target=calls) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    event.remove(pg_engine, "before_cursor_execute", count)
    times = sent_times(pg_engine, "kartra-app:q")
    assert len(times) == 30
    assert times[-1] - times[0] >= 29 * limiter.interval - 0.01
    assert statements.count("go") == 30
    # a caller reserves its own slot only when none waited behind the one before it:
    # the first (twice: the App's row is created in between), and on a busy machine a
    # few whose threads were not yet back in line; one each would be 30
    assert statements.count("reserve") <= 8


def test_shared_limiter_holds_the_call_a_burst_after_one_written_late(pg_engine):
    # The App's row has when each call went; this process knows when its own were
    # written, and the call 5 after one written 0.3 s late waits for that.
    limiter = SharedRateLimiter(pg_engine, "kartra-app:late", 5)
    limiter.acquire()
    time.sleep(0.3)
    limiter.wrote()
    first_written = time.time()
    for _ in range(4):
        limiter.acquire()
        limiter.wrote()
    limiter.acquire()
    # the row alone would have let it go a span after the first went: 0.3 s earlier
    assert time.time() - first_written >= 1.03 - 0.01


def test_a_call_written_late_holds_another_processs_call_a_burst_after_it(pg_engine):
    # Another process knows nothing of this one's late write but the App's row: the call
    # written 0.3 s late moves its time there, and the other process's call 5 after it
    # waits for that.
    late = SharedRateLimiter(pg_engine, "kartra-app:two", 5)
    other = SharedRateLimiter(pg_engine, "kartra-app:two", 5)
    late.acquire()
    went = sent_times(pg_engine, "kartra-app:two")[-1]
    time.sleep(0.3)
    late.wrote()
    first_written = time.time()
    assert sent_times(pg_engine, "kartra-app:two") == [pytest.approx(went + 0.3, abs=0.02)]
    for _ in range(4):
        other.acquire()
        other.wrote()
    other.acquire()
    # the row had when it went: the fifth would have gone 0.3 s earlier
    assert time.time() - first_written >= 1.03 - 0.01
    times = sent_times(pg_engine, "kartra-app:two")
    assert times == sorted(times)


def test_a_call_written_promptly_costs_no_statement(pg_engine):
    limiter = SharedRateLimiter(pg_engine, "kartra-app:prompt", 20)
    limiter.acquire()
    statements = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(pg_engine, "before_cursor_execute", count)
    limiter.wrote()
    event.remove(pg_engine, "before_cursor_execute", count)
    assert statements == []


def test_a_late_call_whose_time_cannot_be_moved_is_still_on_its_way(pg_engine):
    limiter = SharedRateLimiter(pg_engine, "kartra-app:lost", 20)
    limiter.acquire()
    with pg_engine.begin() as conn:
        conn.execute(text("ALTER TABLE rate_limits RENAME TO rate_limits_away"))
    time.sleep(0.02)
    with capture_logs() as logs:
        limiter.wrote()  # logged, not raised: the request is already written
    assert [line["event"] for line in logs] == ["rate_limit_written_time_not_recorded"]
    assert logs[0]["key"] == "kartra-app:lost" and "rate_limits" in logs[0]["error"]
