"""End-to-end harness: the real relay and the fake Kartra as processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT

APP_ID = "app-e2e-1"
API_KEY = "key-e2e-SECRET-7f3a9"
API_PASSWORD = "pw-e2e-SECRET-c41d2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


class Process:
    """A child process with its output in a file, stopped by SIGTERM at the end."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.log = log
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            args,
            env=env,
            cwd=ROOT,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def log_lines(self) -> list[dict]:
        lines = []
        for line in self.output().splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines

    def kill(self) -> None:
        """kill -9, as a lost machine or the OOM killer would."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._out.close()

    def stop(self, timeout: float = 15.0) -> float:
        """SIGTERM the whole process group; returns how long it took to exit."""
        if self.proc.poll() is not None:
            self._out.close()
            return 0.0
        started = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
            raise AssertionError(f"{self.proc.args} ignored SIGTERM for {timeout} s") from None
        finally:
            self._out.close()
        return time.monotonic() - started


def _http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=0.5).status_code == 200
    except requests.RequestException:
        return False


class FakeKartra:
    def __init__(self, tmp_path: Path, *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = Process(
            [
                sys.executable,
                "-m",
                "relay.kartra.fake",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--app-id",
                APP_ID,
                "--api-key",
                API_KEY,
                "--api-password",
                API_PASSWORD,
                "--tags",
                "Relay Demo,Customer,Refunded",
                "--lists",
                "Relay Demo",
                *extra,
            ],
            dict(os.environ),
            tmp_path / f"fake-{self.port}.log",
        )
        wait_until(lambda: _http_ok(self.url + "/_fake/calls"))

    def calls(self) -> list[dict]:
        return requests.get(self.url + "/_fake/calls", timeout=2).json()

    def leads(self):
        return requests.get(self.url + "/_fake/leads", timeout=2).json()

    def set_down(self, down: bool) -> None:
        requests.post(self.url + ("/_fake/down" if down else "/_fake/up"), timeout=2)

    def set_chaos(self, rate: float, timeout_ms: float = 2000) -> None:
        requests.post(
            self.url + "/_fake/chaos", json={"rate": rate, "timeout_ms": timeout_ms}, timeout=2
        )


class Relay:
    def __init__(self, tmp_path: Path, database_url: str, env: dict[str, str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KARTRA_")}
        self.env.update(
            {
                "PORT": str(self.port),
                "DATABASE_URL": database_url,
                "RETRY_FIRST_DELAY": "1",
                "PYTHONUNBUFFERED": "1",
                **env,
            }
        )
        self.log = tmp_path / "relay.log"
        self.cli("db", "upgrade")
        self.process: Process | None = None
        self.workers: list[Process] = []

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "relay", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def start(self) -> Relay:
        self.process = Process(
            [sys.executable, "-m", "relay", "serve", "--host", "127.0.0.1"], self.env, self.log
        )
        wait_until(lambda: _http_ok(self.url + "/readyz"), timeout=30)
        return self

    def start_web(self, concurrency: int = 2) -> Process:
        """The Procfile's web process: gunicorn, no dispatcher inside."""
        env = {**self.env, "WEB_CONCURRENCY": str(concurrency)}
        self.process = Process(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{self.port}", "app:app"],
            env,
            self.log,
        )
        wait_until(lambda: _http_ok(self.url + "/readyz"), timeout=30)
        return self.process

    def start_worker(self) -> Process:
        """The Procfile's worker process."""
        worker = Process(
            [sys.executable, "-m", "relay", "worker"],
            self.env,
            self.log.with_name(f"worker-{len(self.workers)}.log"),
        )
        self.workers.append(worker)
        return worker

    def stop(self) -> float:
        return self.process.stop() if self.process else 0.0

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.stop()

    def post(self, route: str, **kwargs) -> requests.Response:
        return requests.post(f"{self.url}/hooks/{route}", timeout=10, **kwargs)

    def events(self) -> list[dict]:
        """Every stored event with its deliveries, each with its Kartra `calls` (attempts)."""
        from sqlalchemy import create_engine, select

        from relay.store.tables import attempts, deliveries, events

        engine = create_engine(self.env["DATABASE_URL"])
        with engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(select(events).order_by(events.c.id))]
            for row in rows:
                row["deliveries"] = [
                    dict(d._mapping)
                    for d in conn.execute(
                        select(deliveries)
                        .where(deliveries.c.event_id == row["id"])
                        .order_by(deliveries.c.id)
                    )
                ]
                for d in row["deliveries"]:
                    d["calls"] = [
                        dict(a._mapping)
                        for a in conn.execute(
                            select(attempts)
                            .where(attempts.c.delivery_id == d["id"])
                            .order_by(attempts.c.id)
                        )
                    ]
        engine.dispose()
        return rows

    def event(self, event_id: str) -> dict:
        return next(e for e in self.events() if e["id"] == event_id)

    def wait_for_status(self, event_id: str, *statuses: str, timeout: float = 20.0) -> dict:
        return wait_until(
            lambda: (e := self.event(event_id))["status"] in statuses and e, timeout=timeout
        )


@pytest.fixture
def fake_kartra(tmp_path):
    fake = FakeKartra(tmp_path)
    yield fake
    fake.process.stop()


@pytest.fixture
def relay_factory(tmp_path, database_url):
    started: list[Relay] = []

    def make(**env: str) -> Relay:
        relay = Relay(tmp_path, database_url, env)
        started.append(relay)
        return relay

    yield make
    for relay in started:
        relay.stop_all()


def live_env(fake: FakeKartra, **extra: str) -> dict[str, str]:
    return {
        "KARTRA_API_URL": fake.url + "/api",
        "KARTRA_APP_ID": APP_ID,
        "KARTRA_API_KEY": API_KEY,
        "KARTRA_API_PASSWORD": API_PASSWORD,
        **extra,
    }
