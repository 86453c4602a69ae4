import threading

import pytest

from relay.dispatch.backoff import Backoff
from relay.dispatch.limiter import RateLimiter


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
    assert starts[-1] - starts[0] == pytest.approx((rate * 5 - 1) * 1.05 / rate)


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


def test_shared_limiter_paces_every_process_through_postgresql(postgres):
    from relay.dispatch.limiter import SharedRateLimiter
    from relay.store import connect, migrate

    engine = connect(postgres.new_database())
    migrate(engine)
    waits = []
    # two limiters stand for two worker processes sharing one App
    limiters = [SharedRateLimiter(engine, "kartra-app:x", 20, sleep=waits.append) for _ in range(2)]
    for i in range(10):
        limiters[i % 2].acquire()
    engine.dispose()
    # each reservation is one interval after the previous one, whoever made it
    steps = [b - a for a, b in zip(waits, waits[1:], strict=False)]
    assert all(step == pytest.approx(1.05 / 20, abs=0.01) for step in steps)


def test_a_machine_clock_far_from_the_databases_falls_back_to_its_wait(postgres):
    import time

    from relay.dispatch.limiter import SharedRateLimiter
    from relay.store import connect, migrate

    engine = connect(postgres.new_database())
    migrate(engine)
    waits = []
    skewed = SharedRateLimiter(
        engine, "kartra-app:y", 20, clock=lambda: time.time() + 3600, sleep=waits.append
    )
    for _ in range(5):
        skewed.acquire()
    engine.dispose()
    steps = [b - a for a, b in zip(waits, waits[1:], strict=False)]
    assert all(step == pytest.approx(1.05 / 20, abs=0.01) for step in steps)
