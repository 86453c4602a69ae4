"""The processes a benchmark measures: the fake Kartra and the relay's web, serve or
worker processes, on 127.0.0.1, each with a deadline to come up and torn down on exit."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from pathlib import Path

import requests

from bench import runtime

ROOT = Path(__file__).resolve().parents[1]
APP_ID, KEY, PASSWORD = "bench-app", "bench-key", "bench-password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=0.5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


class Stack:
    def __init__(self, database_url: str, work: Path, *fake_args: str, **env: str):
        self.work = work
        fake_port, web_port = free_port(), free_port()
        self.fake_url = f"http://127.0.0.1:{fake_port}"
        self.web_url = f"http://127.0.0.1:{web_port}"
        self.hook = self.web_url + "/hooks/demo-form"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "PORT": str(web_port),
            "KARTRA_API_URL": self.fake_url + "/api",
            "KARTRA_APP_ID": APP_ID,
            "KARTRA_API_KEY": KEY,
            "KARTRA_API_PASSWORD": PASSWORD,
            "LOG_LEVEL": "warning",
            **env,
        }
        self.processes: list[subprocess.Popen] = []
        self.fake_args = [*fake_args, "--port", str(fake_port)]

    def __enter__(self) -> Stack:
        self._start(
            "fake",
            "-m",
            "relay.kartra.fake",
            "--host",
            "127.0.0.1",
            "--app-id",
            APP_ID,
            "--api-key",
            KEY,
            "--api-password",
            PASSWORD,
            "--tags",
            "Relay Demo",
            "--lists",
            "Relay Demo",
            *self.fake_args,
        )
        subprocess.run(
            [runtime.python(), "-m", "relay", "db", "upgrade"],
            env=self.env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_http(self.fake_url + "/_fake/calls")
        return self

    def __exit__(self, *exc_info) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()

    def web(self, concurrency: int) -> subprocess.Popen:
        """The Procfile's web process."""
        process = self._start(
            "web",
            "-m",
            "gunicorn",
            "--bind",
            self.web_url[7:],
            "app:app",
            WEB_CONCURRENCY=str(concurrency),
        )
        wait_http(self.web_url + "/readyz")
        return process

    def serve(self) -> subprocess.Popen:
        """`relay serve`: one process, the dispatcher inside."""
        process = self._start("serve", "-m", "relay", "serve", "--host", "127.0.0.1")
        wait_http(self.web_url + "/readyz")
        return process

    def worker(self) -> subprocess.Popen:
        return self._start("worker", "-m", "relay", "worker")

    def calls(self, session: requests.Session | None = None) -> list[dict]:
        return (session or requests).get(self.fake_url + "/_fake/calls", timeout=10).json()

    def answered(self) -> int:
        """Calls answered 200 so far. Polling this, not the whole log: serialising
        thousands of calls holds the fake's GIL for tens of ms, which delays the answers
        to the calls coming in meanwhile (and, before the fake took its arrival times
        from the kernel, their stamps, and so made 429s of them)."""
        return requests.get(self.fake_url + "/_fake/answered", timeout=10).json()

    def calls_once_answered(self, count: int, within: float) -> list[dict]:
        """The fake's whole log, fetched once `count` calls were answered 200 or `within`
        seconds passed, whichever comes first."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline and self.answered() < count:
            time.sleep(1)
        return self.calls()

    def _start(self, name: str, *args: str, **env: str) -> subprocess.Popen:
        log = self.work / f"{name}-{len(self.processes)}.log"
        process = subprocess.Popen(
            [runtime.python(), *args],
            preexec_fn=_ahead_of_the_relay if name == "fake" else None,
            env={**self.env, **env},
            cwd=ROOT,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process


def _ahead_of_the_relay() -> None:
    """The fake Kartra stands in for servers that do not share the relay's CPUs. It
    counts calls by the kernel's arrival stamps, which its scheduling cannot move; at
    the same priority on 2 cores its answers would still come tens of ms late while the
    relay's processes ran, on top of the latency it plays. It runs at nice -10 when
    allowed (root or CAP_SYS_NICE), else at the same priority."""
    with contextlib.suppress(PermissionError):
        os.nice(-10)
