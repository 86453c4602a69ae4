"""Crash tests on PostgreSQL over real processes: web (gunicorn) and workers as the
Procfile runs them, the fake Kartra, and a sender that retries what got no 2xx.

After each crash: every event that got a 2xx is delivered, none is delivered twice
unless its record says a call was ambiguous, and no delivery is stuck. Each test
prints one `CRASH-FIGURES {...}` line (events sent, accepted, delivered, duplicated,
lost) for docs/reliability.md.
"""

import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import FakeKartra, live_env, wait_until

EVENTS = 60
pytestmark = pytest.mark.postgresql_only


class Sender:
    """Posts each event until it gets a 2xx, the way Stripe or Shopify retry."""

    def __init__(self, relay, count: int = EVENTS, prefix: str = "c"):
        self.relay = relay
        self.bodies = [
            {"email": f"{prefix}{i}@example.com", "first_name": f"N{i}"} for i in range(count)
        ]
        self.accepted: dict[str, str] = {}
        self.failures = 0
        self._lock = threading.Lock()

    def send(self, pause: float = 0.0, bodies: list[dict] | None = None) -> None:
        for body in self.bodies if bodies is None else bodies:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    answer = self.relay.post("demo-form", data=body)
                    if answer.status_code in (200, 202):
                        self.accepted[body["email"]] = answer.json()["event_id"]
                        break
                except requests.RequestException:
                    pass
                with self._lock:
                    self.failures += 1
                time.sleep(0.2)
            time.sleep(pause)

    def in_background(self, pause: float = 0.0, threads: int = 1) -> list[threading.Thread]:
        """Post from `threads` concurrent senders, each its share of the events."""
        started = []
        for n in range(threads):
            thread = threading.Thread(target=self.send, args=(pause, self.bodies[n::threads]))
            thread.start()
            started.append(thread)
        return started


def check_outcome(name: str, relay, fake, sender: Sender) -> dict:
    """Wait for every accepted event, then count deliveries at the fake Kartra."""
    try:
        wait_until(
            lambda: (
                all(e["status"] == "delivered" for e in relay.events())
                and len(relay.events()) >= len(sender.accepted)
            ),
            timeout=90,
            interval=0.5,
        )
    except AssertionError:
        waiting = [
            (
                e["id"],
                e["status"],
                [(d["status"], d["claimed_by"], d["last_error"]) for d in e["deliveries"]],
            )
            for e in relay.events()
            if e["status"] != "delivered"
        ]
        raise AssertionError(f"not delivered after 90 s: {waiting}") from None
    events = relay.events()
    by_email = {e["deliveries"][0]["plan"]["lead"]["email"]: e for e in events}
    leads = {lead["id"]: lead["email"] for lead in fake.leads()}
    applied = Counter()
    for call in fake.calls():
        if call["status"] != 200:
            continue
        lead = call["params"].get("lead", {})
        email = lead.get("email") or leads.get(str(lead.get("id")))
        for result in call["response"].get("actions", []):
            if result.get("assign_tag", {}).get("status") == "Success":
                applied[email] += 1
    duplicated = [email for email, n in applied.items() if n > 1]
    unexplained = [
        email
        for email in duplicated
        if not any(
            a["ambiguous"] or a["outcome"] == "ambiguous"
            for d in by_email[email]["deliveries"]
            for a in d["calls"]
        )
    ]
    lost = [email for email in sender.accepted if applied[email] == 0]
    stuck = [e["id"] for e in events if e["status"] != "delivered"]
    figures = {
        "scenario": name,
        "sent": len(sender.bodies),
        "accepted": len(sender.accepted),
        "sender_retries": sender.failures,
        "stored": len(events),
        "delivered": sum(1 for e in events if e["status"] == "delivered"),
        "duplicated": len(duplicated),
        "duplicated_unexplained": len(unexplained),
        "lost": len(lost),
        "stuck": len(stuck),
    }
    print("CRASH-FIGURES " + json.dumps(figures))
    assert len(sender.accepted) == len(sender.bodies)
    assert not lost and not stuck and not unexplained
    assert len(events) == len(sender.bodies)
    return figures


def gunicorn_workers(master_pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master_pid:
            children.append(int(stat.parent.name))
    return children


ENV = {"DELIVERY_LEASE": "3", "KARTRA_TIMEOUT": "1", "RETRY_FIRST_DELAY": "0.5"}


def test_kill_9_a_worker_in_the_middle_of_a_backlog(relay_factory, tmp_path):
    fake = FakeKartra(tmp_path, "--latency-ms", "150", "--jitter-ms", "50")
    try:
        relay = relay_factory(**live_env(fake, **ENV))
        relay.start_web()
        sender = Sender(relay)
        sender.send()
        doomed = relay.start_worker()
        relay.start_worker()
        wait_until(lambda: len(fake.calls()) >= 10, timeout=30)
        doomed.kill()
        check_outcome("kill -9 a worker mid-backlog", relay, fake, sender)
    finally:
        fake.process.stop()


def test_kill_9_a_web_process_while_posting(relay_factory, tmp_path):
    fake = FakeKartra(tmp_path)
    try:
        relay = relay_factory(**live_env(fake, **ENV))
        web = relay.start_web(concurrency=2)
        relay.start_worker()
        sender = Sender(relay, count=120)
        posting = sender.in_background(threads=6)
        wait_until(lambda: len(sender.accepted) >= 30, timeout=30)
        [victim, *_] = gunicorn_workers(web.proc.pid)
        os.kill(victim, signal.SIGKILL)
        for thread in posting:
            thread.join(120)
        check_outcome("kill -9 a web process while posting", relay, fake, sender)
    finally:
        fake.process.stop()


def test_kartra_failing_with_5xx_timeouts_and_resets_then_recovering(relay_factory, tmp_path):
    fake = FakeKartra(tmp_path)
    try:
        relay = relay_factory(**live_env(fake, **ENV))
        relay.start_web()
        relay.start_worker()
        relay.start_worker()
        fake.set_chaos(0.5, timeout_ms=1500)
        sender = Sender(relay)
        sender.send(pause=0.02)
        wait_until(lambda: len(fake.calls()) >= 40, timeout=60)
        fake.set_chaos(0)
        figures = check_outcome("Kartra 5xx, timeouts, resets, then recovery", relay, fake, sender)
        assert figures["delivered"] == EVENTS
    finally:
        fake.process.stop()


def test_postgresql_restarted_during_traffic(relay_factory, postgres, tmp_path):
    fake = FakeKartra(tmp_path, "--latency-ms", "50")
    try:
        relay = relay_factory(**live_env(fake, **ENV))
        relay.start_web()
        relay.start_worker()
        sender = Sender(relay)
        posting = sender.in_background(pause=0.03)
        wait_until(lambda: len(sender.accepted) >= 15, timeout=30)
        postgres.restart()
        for thread in posting:
            thread.join(120)
        check_outcome("PostgreSQL restarted during traffic", relay, fake, sender)
    finally:
        fake.process.stop()
