"""The app booted exactly as the Procfile says, by honcho (the Python Procfile runner),
on PostgreSQL with the fake Kartra: release migrates, web accepts, worker delivers, and
a SIGTERM to everything mid-traffic followed by a restart loses nothing."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from tests.conftest import ROOT
from tests.e2e.conftest import FakeKartra, free_port, live_env, wait_until


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


class Honcho:
    """`honcho start web worker` with the relay's environment, in its own session."""

    def __init__(self, env: dict[str, str], tmp_path: Path):
        self.env = env
        self.empty_env_file = tmp_path / "empty.env"
        self.empty_env_file.write_text("")
        self.log = tmp_path / "honcho.log"
        self.proc: subprocess.Popen | None = None

    def run(self, command: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "honcho",
                "-e",
                str(self.empty_env_file),
                "run",
                "sh",
                "-c",
                command,
            ],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def start(self) -> None:
        self.out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "honcho",
                "-e",
                str(self.empty_env_file),
                "start",
                "-p",
                self.env["PORT"],
                "web",
                "worker",
            ],
            env=self.env,
            cwd=ROOT,
            stdout=self.out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def sigterm(self) -> float:
        started = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(40)
        finally:
            self.out.close()
        return time.monotonic() - started


def test_release_web_and_worker_as_the_procfile_says(tmp_path, postgres):
    fake = FakeKartra(tmp_path, "--latency-ms", "800")
    port = free_port()
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("KARTRA_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    env.update(
        live_env(fake),
        TMPDIR=str(temp),
        DATABASE_URL=postgres.new_database(),
        PORT=str(port),
        WEB_CONCURRENCY="2",
        PYTHONUNBUFFERED="1",
        PATH=f"{Path(sys.executable).parent}:{env['PATH']}",
    )
    honcho = Honcho(env, tmp_path)
    try:
        release = honcho.run(procfile()["release"])
        assert release.returncode == 0, release.stderr
        assert "database schema is current" in release.stdout

        honcho.start()
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _ok(url + "/readyz"), timeout=30)
        assert [p.name[:14] for p in temp.iterdir()] == ["relay-metrics-"]
        accepted: list[str] = []
        stop_posting = threading.Event()

        def post() -> None:
            n = 0
            while not stop_posting.is_set():
                try:
                    answer = requests.post(
                        url + "/hooks/demo-form", timeout=5, data={"email": f"h{n}@example.com"}
                    )
                except requests.RequestException:
                    return
                if answer.status_code != 200:
                    return
                accepted.append(f"h{n}@example.com")
                n += 1

        poster = threading.Thread(target=post)
        poster.start()
        wait_until(lambda: len(fake.calls()) >= 5, timeout=30)
        took = honcho.sigterm()
        stop_posting.set()
        poster.join(10)
        assert took < 30, "every process must stop inside Heroku's 30 s"
        delivered_before = {c["params"]["lead"].get("email") for c in fake.calls()}
        assert len(accepted) > len(delivered_before) > 0

        honcho.start()
        wait_until(lambda: _ok(url + "/readyz"), timeout=30)
        wait_until(lambda: set(accepted) <= _delivered(fake), timeout=60)
        # a graceful stop leaves nothing ambiguous: every lead was created exactly once
        emails = [c["params"]["lead"].get("email") for c in fake.calls() if c["status"] == 200]
        assert len(emails) == len(set(emails)) == len(accepted)
        honcho.sigterm()
        assert list(temp.iterdir()) == [], "the metrics folder goes with the server"
    finally:
        if honcho.proc and honcho.proc.poll() is None:
            honcho.sigterm()
        fake.process.stop()


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=0.5).status_code == 200
    except requests.RequestException:
        return False


def _delivered(fake: FakeKartra) -> set[str]:
    return {c["params"]["lead"].get("email") for c in fake.calls() if c["status"] == 200}


def test_single_dyno_mode_refuses_two_dispatchers_on_one_sqlite_file(tmp_path):
    env = {
        **os.environ,
        "RELAY_EMBEDDED_WORKER": "1",
        "WEB_CONCURRENCY": "2",
        "PORT": str(free_port()),
        "DATABASE_URL": f"sqlite:///{tmp_path}/r.db",
    }
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "app:app"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "WEB_CONCURRENCY=1" in result.stderr + result.stdout
