"""`/metrics` and `/readyz` through the test client; the dispatcher instrumented the
way the CLI starts it."""

import threading
import time

from prometheus_client.parser import text_string_to_metric_families

from relay.admin.dispatch_metrics import instrument
from relay.admin.resume import Resume
from relay.dispatch.worker import Dispatcher
from relay.mapping import load_mappings
from relay.store.identities import remember
from tests.admin.conftest import TOKEN, deliver, post
from tests.ingest.test_identities import SHOP as SUBSCRIPTIONS

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def scrape(client) -> dict:
    answer = client.get("/metrics", headers=AUTH)
    assert answer.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.get_data(as_text=True))
        for sample in family.samples
    }


def value(figures, name, **labels):
    return figures.get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_senders_ping_counts_as_ping(client, app, monkeypatch):
    monkeypatch.setenv("WOO_SECRET", "s3cret")
    relay = app.extensions["relay"]
    woo = relay.config.mappings_dir / "woo.yaml"
    woo.write_text("verify: {scheme: woocommerce, secret: '${WOO_SECRET}'}\nrules: [{name: r}]\n")
    relay.mappings = load_mappings(relay.config.mappings_dir)
    before = scrape(client)
    answer = client.post(
        "/hooks/woo", data=b"webhook_id=7", content_type="application/x-www-form-urlencoded"
    )
    assert answer.status_code == 200 and answer.get_json() == {"status": "ping"}
    after = scrape(client)
    key = {"route": "woo", "outcome": "ping"}
    assert (
        value(after, "relay_events_received_total", **key)
        - value(before, "relay_events_received_total", **key)
        == 1
    )


def test_metrics_need_the_token(client):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer x"}).status_code == 401


def test_events_calls_and_queue_state(client, app, engine, fake):
    before = scrape(client)
    post(client, id="a")
    post(client, id="a")
    post(client, id="b", type="refund")
    client.post("/hooks/nope", json={})
    client.post("/hooks/shop", data=b"{not json", content_type="application/json")
    relay = app.extensions["relay"]
    dispatcher = Dispatcher(relay.config, relay.engine)
    instrument(dispatcher)
    assert dispatcher.run_once() == 1
    after = scrape(client)

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("relay_events_received_total", route="shop", outcome="queued") == 1
    assert grew("relay_events_received_total", route="shop", outcome="duplicate") == 1
    assert grew("relay_events_received_total", route="shop", outcome="ignored") == 1
    assert grew("relay_events_received_total", route="(unknown)", outcome="http_404") == 1
    assert grew("relay_events_received_total", route="shop", outcome="http_400") == 1
    assert grew("relay_kartra_call_seconds_count", outcome="action_config") == 1
    assert grew("relay_kartra_errors_total", code="212") == 1
    assert grew("relay_rate_limit_wait_seconds_count") == 1
    assert grew("relay_delivery_attempts_total", result="ActionConfigError") == 1
    assert value(after, "relay_events_stored", route="shop", status="failed") == 1
    assert value(after, "relay_deliveries_stored", status="failed") == 1
    assert value(after, "relay_queue_depth") == 0


def test_queue_depth_oldest_due_and_paused_accounts(client, app):
    from relay.store.queue import pause_account

    post(client, id="a")
    time.sleep(0.2)
    figures = scrape(client)
    assert value(figures, "relay_queue_depth") == 1
    assert value(figures, "relay_oldest_due_delivery_age_seconds") >= 0.2
    pause_account(app.extensions["relay"].engine, "default", "card expired")
    figures = scrape(client)
    assert value(figures, "relay_paused_accounts") == 1
    assert value(figures, "relay_queue_depth") == 0
    assert deliver(app) == 0


def test_readyz_reports_the_worker_heartbeat_and_can_require_it(client, app):
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json["worker"] == {"fresh": False, "seconds_since_beat": None}
    assert client.get("/readyz?require=worker").status_code == 503
    relay = app.extensions["relay"]
    dispatcher = Dispatcher(relay.config, relay.engine, poll_interval=0.05)
    thread = threading.Thread(target=dispatcher.run)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while client.get("/readyz?require=worker").status_code != 200:
            assert time.monotonic() < deadline, "no heartbeat"
            time.sleep(0.05)
        assert value(scrape(client), "relay_worker_heartbeat_age_seconds") < 5
    finally:
        dispatcher.shutdown()
        thread.join()
    answer = client.get("/readyz?require=worker")
    assert answer.status_code == 503 and answer.json["checks"]["worker"] is False


def test_events_waiting_for_a_customer_are_counted(client, app, engine):
    relay = app.extensions["relay"]
    (relay.config.mappings_dir / "subs.yaml").write_text(SUBSCRIPTIONS)
    relay.mappings = load_mappings(relay.config.mappings_dir)
    for n in range(2):
        client.post(
            "/hooks/subs", json={"id": f"c{n}", "type": "cancelled", "customer": f"cus_{n}"}
        )
    assert value(scrape(client), "relay_events_waiting_for_customer") == 2
    remember(engine, "subs", "default", "cus_0", "jane@example.com")
    assert Resume(engine, lambda: relay.mappings).once() == 1
    assert value(scrape(client), "relay_events_waiting_for_customer") == 1
