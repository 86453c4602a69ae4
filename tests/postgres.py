"""A throwaway PostgreSQL cluster for the test session, on 127.0.0.1.

`TEST_DATABASE_URL` (a server the tests may create databases on) is used when set;
otherwise the session runs `initdb` and `pg_ctl` from Debian's postgresql package in a
temporary directory (as the `postgres` user when the tests run as root, since the
server refuses to run as root) and removes it at the end.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

MISSING = (
    "PostgreSQL server binaries not found: install Debian's postgresql package "
    "(`.ci/run` does) or set TEST_DATABASE_URL=postgresql://user:pass@127.0.0.1/postgres"
)


def _bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if not found:
        raise RuntimeError(MISSING)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self) -> None:
        self.external = os.environ.get("TEST_DATABASE_URL")
        self.directory: Path | None = None
        self.admin_url = self.external or ""

    def start(self) -> Cluster:
        if self.external:
            return self
        initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
        self.directory = Path(tempfile.mkdtemp(prefix="relay-pg-"))
        data = self.directory / "data"
        port = _free_port()
        self._as_owner(["chmod", "700", str(self.directory)])
        self._run(
            [initdb, "-D", str(data), "-U", "relay", "--auth=trust", "-E", "UTF8", "--no-sync"]
        )
        options = f"-h 127.0.0.1 -p {port} -k {self.directory} -c fsync=on -c max_connections=200"
        self._run(
            [
                pg_ctl,
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(self.directory / "log"),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        self.admin_url = f"postgresql://relay@127.0.0.1:{port}/postgres"
        return self

    def stop(self) -> None:
        if self.directory is None:
            return
        subprocess.run(
            self._user(
                [
                    _bin("pg_ctl"),
                    "-D",
                    str(self.directory / "data"),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ]
            ),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.directory, ignore_errors=True)

    def restart(self) -> None:
        """Restart the server (for tests that survive a database restart)."""
        data = str(self.directory / "data")
        self._run(
            [
                _bin("pg_ctl"),
                "-D",
                data,
                "-l",
                str(self.directory / "log"),
                "-m",
                "fast",
                "-w",
                "-t",
                "60",
                "restart",
            ]
        )

    def new_database(self) -> str:
        """A fresh empty database; returns its SQLAlchemy URL."""
        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return (
            self.admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
            + "/"
            + name
        )

    def _as_owner(self, args: list[str]) -> None:
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "postgres:postgres", str(self.directory)], check=True)
        subprocess.run(args, check=True)

    @staticmethod
    def _user(args: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args

    def _run(self, args: list[str]) -> None:
        result = subprocess.run(self._user(args), capture_output=True, text=True, timeout=120)
        if result.returncode:
            raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
