"""`/metrics` while several gunicorn workers serve traffic (the Procfile's `web`), with
the dispatcher as its own process (`worker`), all on 127.0.0.1.

Each scrape lands on whichever gunicorn worker accepts it; with
PROMETHEUS_MULTIPROC_DIR every one of them must report the same totals.
"""

import json
import sys
import time
from http.client import HTTPConnection
from urllib.parse import urlencode

import requests
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Process, live_env, wait_until

TOKEN = "metrics-admin-token-0123456789"
EVENTS = 24
HELD = 6  # connections held open at once: more than one worker can take


def figures(url: str) -> dict:
    text = requests.get(
        url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
    ).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def post_held_open(port: int, numbers) -> list[str]:
    """Open every connection and send its headers first, the bodies only once all are
    waiting: a worker holds at most `--worker-connections` of them, so the requests
    are bound to be spread over several workers."""
    connections = []
    for i in numbers:
        body = urlencode({"email": f"buyer{i}@example.com"}).encode()
        conn = HTTPConnection("127.0.0.1", port, timeout=10)
        conn.putrequest("POST", "/hooks/demo-form")
        conn.putheader("Content-Type", "application/x-www-form-urlencoded")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        connections.append((conn, body))
    time.sleep(0.5)
    ids = []
    for conn, body in connections:
        conn.send(body)
    for conn, _ in connections:
        ids.append(json.loads(conn.getresponse().read())["event_id"])
        conn.close()
    return ids


def received_by(path) -> float:
    """Events one process counted, from its own file."""
    return sum(
        sample.value
        for metric in MultiProcessCollector.merge([str(path)], accumulate=True)
        if metric.name == "relay_events_received"
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


def ready(url: str) -> bool:
    try:
        return requests.get(url + "/readyz?require=worker", timeout=1).ok
    except requests.RequestException:
        return False


def test_metrics_add_up_across_gunicorn_workers(relay_factory, fake_kartra, tmp_path):
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    relay = relay_factory(
        **live_env(fake_kartra),
        ADMIN_TOKEN=TOKEN,
        PROMETHEUS_MULTIPROC_DIR=str(multiproc),
        WEB_CONCURRENCY="3",
        GUNICORN_THREADS="2",
    )
    web = Process(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            "python:relay.gunicorn_conf",
            "--bind",
            f"127.0.0.1:{relay.port}",
            # A worker takes no more connections than it has threads, so concurrent
            # senders spread over the workers instead of queueing on the first one.
            "--worker-connections",
            "2",
            "app:app",
        ],
        relay.env,
        tmp_path / "web.log",
    )
    worker = Process([sys.executable, "-m", "relay", "worker"], relay.env, tmp_path / "worker.log")
    try:
        wait_until(lambda: ready(relay.url), timeout=30)

        ids = []
        for start in range(0, EVENTS, HELD):
            ids += post_held_open(relay.port, range(start, start + HELD))
        for event_id in ids:
            relay.wait_for_status(event_id, "delivered")
        per_process = [received_by(path) for path in multiproc.glob("counter_*.db")]
        assert sum(per_process) == EVENTS
        assert len([n for n in per_process if n]) >= 2, "one gunicorn worker took every event"
        received = ("relay_events_received_total", (("outcome", "queued"), ("route", "demo-form")))
        calls = ("relay_kartra_call_seconds_count", (("outcome", "ok"),))
        for _ in range(6):
            seen = figures(relay.url)
            assert seen[received] == EVENTS
            assert seen[("relay_deliveries_stored", (("status", "delivered"),))] == EVENTS
            assert seen[("relay_queue_depth", ())] == 0
            # The worker runs on this machine with the same dir: its calls are counted too.
            assert seen[calls] == EVENTS
    finally:
        worker.stop()
        web.stop()
