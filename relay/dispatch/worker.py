"""The dispatcher: claim due deliveries, send them to Kartra, record what happened.

One loop claims deliveries and hands them to a small pool of sender threads (Kartra
answers in a few hundred milliseconds, so a few calls must be in flight to use the
App's 20 calls/s). Every HTTP call first waits on the rate limiter.

What happens to a delivery after a call:
- every action done -> `delivered`; the Kartra lead id is remembered for the email;
- transient failure (429, 5xx, timeout) -> retried a few times within the attempt
  (tenacity), then rescheduled with the persisted backoff, `dead` when exhausted;
  when the request may have been applied and a not-idempotent action (points) is
  still pending, it is NOT re-sent: `failed`, marked ambiguous, for an operator;
- configuration error of the account (bad key, App inactive) -> the account is
  paused and the delivery waits, its retries untouched;
- configuration error of the action (tag missing) or data error -> `failed`, with
  Kartra's code and a hint, to be replayed after a fix.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError
from tenacity import (
    Retrying,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    stop_when_event_set,
    wait_exponential,
    wait_exponential_jitter,
)

from relay.config import Config
from relay.dispatch.backoff import Backoff
from relay.dispatch.limiter import Limiter, rate_limiter_for
from relay.kartra import (
    ACTIONS,
    AccountError,
    Credentials,
    KartraCall,
    KartraClient,
    KartraError,
    TransientError,
    build_params,
    mask,
)
from relay.logs import get_logger, mask_email
from relay.store import queue
from relay.store.tables import utcnow
from relay.store.wakeup import listen

log = get_logger("relay.dispatch")

KARTRA_CONNECT_TIMEOUT = 3.05
# A claim takes well under a millisecond on a table whose statistics are current; one
# this slow means the planner works from stale ones (a burst into an empty queue).
SLOW_CLAIM = 0.025
# ANALYZE at most this often (seconds), however slow claims stay for other reasons.
# Not much less often: a burst that lands just after an ANALYZE of the small queue
# would otherwise be claimed from stale statistics until the next one (a minute of
# 4-second claims with 6,000 pending, 9 calls in a minute).
ANALYZE_EVERY = 5.0
# How long a thread may hold the GIL while another waits for it (Python's default is 5 ms).
# A sender whose limiter slot has come must not wait behind the other threads' work, up
# to several 5 ms turns: the later its call reaches Kartra after the time the limiter
# counted, the closer it comes to the calls after it (measured: time from the limiter to
# the fake Kartra, max 43 ms at the default, 11 ms at 1 ms; about 0.3-0.6 ms more CPU a
# call, bench/README.md).
SWITCH_INTERVAL = 0.001
# With more due than free senders, claim once this many are free rather than one at a
# time: a claim per finished call was the dispatcher's most frequent statement. The
# senders are 12 so that 9 or more keep calls going meanwhile (20 calls/s at up to
# 350 ms each needs 7 in flight).
SENDERS = 12
CLAIM_BATCH = 4
# A database that is away: a restart, a lost connection that `retried_on_disconnect`'s
# one retry did not outlast.
DATABASE_AWAY = (OperationalError, InterfaceError)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Dispatcher:
    def __init__(
        self,
        config: Config,
        engine: Engine,
        *,
        client: KartraClient | None = None,
        limiter: Limiter | None = None,
        backoff: Backoff | None = None,
        wake: threading.Event | None = None,
        senders: int = SENDERS,
        claim_batch: int = CLAIM_BATCH,
        poll_interval: float = 1.0,
        retry_wait: Any = None,
    ):
        self.config = config
        self.engine = engine
        self.client = client or KartraClient(
            config.kartra_url,
            timeout=(KARTRA_CONNECT_TIMEOUT, config.kartra_timeout),
            test_mode=config.kartra_test_mode,
        )
        self.limiter = limiter or rate_limiter_for(
            engine, config.kartra_app_id, config.kartra_rate_limit
        )
        self.backoff = backoff or Backoff(first=config.retry_first_delay)
        self.wake = wake or threading.Event()
        self.stop = threading.Event()
        self.senders = senders
        self.claim_batch = min(claim_batch, senders)
        self.poll_interval = poll_interval
        self.retry_wait = retry_wait or wait_exponential_jitter(initial=1, max=4, jitter=0.5)
        self.name = worker_name()
        self.lease = timedelta(seconds=config.delivery_lease)
        # The deliveries claimed and not yet finished; with the two below, guarded by
        # _holding_lock, which senders finishing and the claiming loop share.
        self.holding: set[int] = set()
        self._holding_lock = threading.Lock()
        self._backlog = False  # the last claim took all it asked for: more is due
        self._finished = 0
        self._analyzed_at = float("-inf")

    def run(self) -> None:
        """Deliver until `stop` is set, then finish the calls in flight and give back
        the claims not yet started."""
        log.info(
            "worker_started",
            worker=self.name,
            mode=self.config.mode,
            rate_limit=self.config.kartra_rate_limit,
            senders=self.senders,
        )
        if self.engine.dialect.name == "sqlite":
            expired = queue.expire_claims(self.engine)
            if expired:
                log.warning(
                    "claims_expired",
                    count=expired,
                    detail="left by a dispatcher that did not stop cleanly",
                )
        started_at = utcnow()
        next_beat = 0.0
        listener = listen(self.engine, self.wake, self.stop)
        with ThreadPoolExecutor(self.senders, thread_name_prefix="sender") as pool:
            while not self.stop.is_set():
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.lease.total_seconds() / 6
                    self._beat(started_at)
                self.wake.clear()
                with self._holding_lock:
                    wanted = self._to_claim()
                    finished = self._finished
                claimed = self._claim(wanted) if wanted else []
                with self._holding_lock:
                    if wanted:
                        self._backlog = len(claimed) == wanted
                    self.holding.update(delivery.id for delivery in claimed)
                    # a sender that finished meanwhile judged by the backlog as it was
                    missed = self._finished != finished
                for delivery in claimed:
                    pool.submit(self._process_and_wake, delivery)
                # shutdown() sets stop, then wake: a wake cleared above after it was
                # set leaves stop to see here
                idle = len(claimed) < wanted or not wanted
                if idle and not missed and not self.stop.is_set():
                    self.wake.wait(self.poll_interval)
        if listener:
            listener.join(timeout=5)
        try:
            released = queue.release(self.engine, self.name)
            queue.forget_worker(self.engine, self.name)
        except Exception:
            # the database is gone as the process stops: the claims expire with the lease
            log.exception("release_failed", worker=self.name)
            released = None
        log.info("worker_stopped", worker=self.name, released=released)

    def _beat(self, started_at) -> None:
        try:
            with self._holding_lock:
                holding = sorted(self.holding)
            queue.beat(self.engine, self.name, started_at, self.lease, holding)
        except Exception:
            log.exception("heartbeat_failed", worker=self.name)

    def shutdown(self) -> None:
        self.stop.set()
        self.wake.set()

    def run_once(self) -> int:
        """Claim what is due and deliver it in this thread; for tests and `relay try`."""
        claimed = self._claim(self.senders)
        for delivery in claimed:
            self.process(delivery)
        return len(claimed)

    def _claim(self, limit: int) -> list[queue.Claimed]:
        started = time.monotonic()
        try:
            claimed = queue.claim(self.engine, self.name, limit=limit, lease=self.lease)
        except Exception:
            log.exception("claim_failed", worker=self.name)
            return []
        took = time.monotonic() - started
        if took > SLOW_CLAIM and started - self._analyzed_at >= ANALYZE_EVERY:
            self._refresh_statistics(took)
        return claimed

    def _refresh_statistics(self, claim_seconds: float) -> None:
        """A slow claim most likely ran on statistics from before a burst: refresh
        them now rather than when autovacuum gets to it (up to a minute later)."""
        self._analyzed_at = time.monotonic()
        try:
            queue.refresh_statistics(self.engine)
        except Exception:
            log.exception("analyze_failed", worker=self.name)
            return
        log.info(
            "queue_analyzed",
            worker=self.name,
            slow_claim_ms=round(claim_seconds * 1000, 1),
            took_ms=round((time.monotonic() - self._analyzed_at) * 1000, 1),
        )

    def _process_and_wake(self, delivery: queue.Claimed) -> None:
        try:
            self.process(delivery)
        except Exception:
            log.exception("delivery_crashed", delivery_id=delivery.id, event_id=delivery.event_id)
        finally:
            with self._holding_lock:
                self.holding.discard(delivery.id)
                self._finished += 1
                wanted = self._to_claim()
            if wanted:
                self.wake.set()

    def _to_claim(self) -> int:
        """How many deliveries to claim now, under `_holding_lock`: every free sender's,
        once `claim_batch` senders are free while a backlog lasts, else as soon as one is."""
        free = self.senders - len(self.holding)
        return free if free >= self.claim_batch or not self._backlog else 0

    def process(self, delivery: queue.Claimed) -> None:
        if self.config.dry_run:
            self._record_dry_run(delivery)
            return
        account = self.config.accounts.get(delivery.account)
        if account is None:
            queue.finish(
                self.engine,
                delivery,
                status="failed",
                records=[],
                done=delivery.done,
                lead_id=delivery.lead_id,
                error=f"no credentials for Kartra account {delivery.account!r}",
            )
            return
        credentials = Credentials(self.config.kartra_app_id, account.api_key, account.api_password)
        Sending(self, delivery, credentials).run()

    def _record_dry_run(self, delivery: queue.Claimed) -> None:
        credentials = Credentials(self.config.kartra_app_id or "(not set)", "***", "***")
        params = build_params(
            credentials, delivery.plan, lead_id=delivery.lead_id, done=delivery.done
        )
        record = queue.AttemptRecord(utcnow(), 0.0, mask(params), None, None, "dry_run")
        queue.finish(
            self.engine,
            delivery,
            status="dry_run",
            records=[record],
            done=delivery.done,
            lead_id=delivery.lead_id,
        )
        log.info(
            "kartra_call",
            **_context(delivery),
            lead=mask_email((delivery.plan.get("lead") or {}).get("email")),
            attempt=delivery.attempts + 1,
            commands=_commands(params),
            duration_ms=0,
            http_status=None,
            results=[],
            outcome="dry_run",
        )


class Sending:
    """One attempt at one delivery: a few quick tries, then the verdict is stored."""

    def __init__(self, dispatcher: Dispatcher, delivery: queue.Claimed, credentials: Credentials):
        self.d = dispatcher
        self.delivery = delivery
        self.credentials = credentials
        self.email = (delivery.plan.get("lead") or {}).get("email")
        self.lead_id_before = delivery.lead_id or delivery.known_lead_id
        self.lead_id = self.lead_id_before
        self.done = list(delivery.done)
        self.calls: list[tuple[KartraCall, bool]] = []
        self.marked = False
        # A dead worker may have sent a reclaimed delivery's call; one that must not
        # repeat is marked before it goes (`mark_sending`), so without the mark it did not.
        self.maybe_sent = delivery.reclaimed and (delivery.sending or not self._repeat_unsafe())
        self.after_ambiguous = self.maybe_sent or (
            delivery.attempts > 0 and queue.last_call_ambiguous(dispatcher.engine, delivery.id)
        )

    def run(self) -> None:
        if self.maybe_sent and self._repeat_unsafe():
            self._finish(
                "failed",
                "ambiguous: the worker that held this delivery stopped before recording "
                "its call, which may have been applied and carries an action that must "
                "not repeat: check the lead in Kartra, then replay",
                count_attempt=False,
            )
            return
        retrying = Retrying(
            retry=retry_if_exception(self._worth_retrying_now),
            stop=stop_after_attempt(3) | stop_when_event_set(self.d.stop),
            wait=self.d.retry_wait,
            reraise=True,
        )
        try:
            retrying(self._try_once)
        except AccountError as exc:
            queue.pause_account(self.d.engine, self.delivery.account, str(exc))
            log.warning("account_paused", account=self.delivery.account, reason=str(exc))
            self._finish("pending", str(exc), count_attempt=False)
        except TransientError as exc:
            self._finish_transient(exc)
        except KartraError as exc:
            self._finish("failed", str(exc))
        else:
            self._finish("delivered", None)

    def _try_once(self) -> None:
        try:
            outcome = self.d.client.deliver(
                self.credentials,
                self.delivery.plan,
                lead_id=self.lead_id,
                done=self.done,
                acquire=self._acquire,
                written=self.d.limiter.wrote,
            )
        except KartraError as exc:
            self._absorb(exc.outcome)
            raise
        self._absorb(outcome)

    def _acquire(self) -> None:
        """Before each request: the rate limiter's turn, then the `sending` mark if the
        call carries an action that must not repeat. Nothing is written yet, so a
        database briefly away (a restart) is waited for, up to half the lease, rather
        than leaving the claim to lapse and come back `reclaimed`."""
        retrying = Retrying(
            retry=retry_if_exception_type(DATABASE_AWAY),
            wait=wait_exponential(multiplier=0.25, max=4),
            stop=stop_after_delay(self.d.lease.total_seconds() / 2)
            | stop_when_event_set(self.d.stop),
            before_sleep=self._waiting_for_the_database,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                self.d.limiter.acquire()
                if not self.marked and self._repeat_unsafe():
                    queue.mark_sending(self.d.engine, self.delivery.id)
                    self.marked = True

    def _waiting_for_the_database(self, retry_state) -> None:
        log.warning(
            "database_unavailable",
            **_context(self.delivery),
            step="rate limit",
            error=str(getattr(retry_state.outcome.exception(), "orig", None) or "lost"),
        )

    def _absorb(self, outcome) -> None:
        if outcome is None:
            return
        attempt = self.delivery.attempts + 1
        for call in outcome.calls:
            outcome_kind = _call_outcome(call)
            self.calls.append((call, self.after_ambiguous))
            log.info(
                "kartra_call",
                **_context(self.delivery),
                lead=mask_email(self.email),
                attempt=attempt,
                commands=_commands(call.request),
                duration_ms=round(call.duration_ms, 1),
                http_status=call.http_status,
                results=[{"cmd": r.cmd, "status": r.status, "type": r.type} for r in call.results],
                outcome=outcome_kind,
                ambiguous_retry=self.after_ambiguous,
                error=call.error,
            )
            self.after_ambiguous = self.after_ambiguous or outcome_kind == "ambiguous"
        self.lead_id = outcome.lead_id
        self.done = sorted(set(self.done) | set(outcome.done))

    def _worth_retrying_now(self, exc: BaseException) -> bool:
        return isinstance(exc, TransientError) and not self._ambiguous_and_unsafe(exc)

    def _ambiguous_and_unsafe(self, exc: TransientError) -> bool:
        """A call that may have been applied must not be re-sent blindly when it
        carried an action that adds up (points) or moves money."""
        return exc.ambiguous and self._repeat_unsafe()

    def _repeat_unsafe(self) -> bool:
        actions = self.delivery.plan.get("actions") or []
        return any(
            i not in self.done and not ACTIONS[a["cmd"]].idempotent
            for i, a in enumerate(actions)
            if a.get("cmd") in ACTIONS
        )

    def _finish_transient(self, exc: TransientError) -> None:
        if self._ambiguous_and_unsafe(exc):
            self._finish(
                "failed",
                f"ambiguous: {exc}; the call may have been applied and carries an "
                "action that must not repeat: check the lead in Kartra, then replay",
            )
            return
        attempt = self.delivery.attempts + 1
        if self.d.backoff.exhausted(attempt):
            self._finish("dead", f"gave up after {attempt} attempts: {exc}")
            return
        self._finish("pending", str(exc), next_attempt_at=utcnow() + self.d.backoff.delay(attempt))

    def _finish(
        self, status: str, error: str | None, *, next_attempt_at=None, count_attempt: bool = True
    ) -> None:
        learned = self.email and self.lead_id != self.lead_id_before
        queue.finish(
            self.d.engine,
            self.delivery,
            status=status,
            records=[_record(call, ambiguous) for call, ambiguous in self.calls],
            done=self.done,
            lead_id=self.lead_id,
            error=error,
            next_attempt_at=next_attempt_at,
            count_attempt=count_attempt,
            remember_email=self.email if learned else None,
        )
        log.info(
            "delivery_" + ("retry" if status == "pending" else status),
            **_context(self.delivery),
            calls=len(self.calls),
            error=error,
            next_attempt_at=next_attempt_at.isoformat() if next_attempt_at else None,
        )


def _context(delivery: queue.Claimed) -> dict[str, Any]:
    return {
        "event_id": delivery.event_id,
        "delivery_id": delivery.id,
        "rule": delivery.rule,
        "account": delivery.account,
    }


def _commands(params: dict[str, Any]) -> list[str]:
    return [a.get("cmd") for a in params.get("actions") or []]


def _call_outcome(call: KartraCall) -> str:
    """`ok`, or the class of the worst failure in this one call."""
    kinds = [call.kind] if call.kind else []
    kinds += [r.kind for r in call.results]
    for kind in ("account", "transient", "ambiguous", "action_config", "data"):
        if kind in kinds:
            return kind
    return "ok"


def _record(call: KartraCall, ambiguous: bool) -> queue.AttemptRecord:
    """`ambiguous`: this call repeats one that may already have been applied."""
    return queue.AttemptRecord(
        started_at=call.started_at,
        duration_ms=call.duration_ms,
        request=call.request,
        http_status=call.http_status,
        response=call.response,
        outcome=_call_outcome(call),
        error=call.error,
        ambiguous=ambiguous,
    )
