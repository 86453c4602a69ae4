"""Fixtures for the Kartra room: a fake Kartra over real HTTP on 127.0.0.1, clients for
it, and a mock transport for answers the fake never gives (bad bodies, resets)."""

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter

from relay.kartra import Credentials, KartraClient
from relay.kartra.fake import FakeKartra

APP_ID = "app-relay-test"
# Distinctive values, so a leak is easy to find in any string.
API_KEY = "key-5ecr3t-K3Y-8c1f"
API_PASSWORD = "pw-5ecr3t-PA55-77d2"


@pytest.fixture
def credentials() -> Credentials:
    return Credentials(APP_ID, API_KEY, API_PASSWORD)


@pytest.fixture
def fake() -> FakeKartra:
    return FakeKartra(
        app_id=APP_ID,
        accounts={API_KEY: API_PASSWORD},
        tags=["Customer", "Relay Demo"],
        lists=["News"],
        sequences={"Onboarding": ["1", "2", "3"]},
        transactions={"5001": "9001"},
        subscriptions={"9001": "Active"},
    )


@pytest.fixture
def kartra_url(serve: Callable[[FakeKartra], str], fake: FakeKartra) -> str:
    return serve(fake)


@pytest.fixture
def fake_process(tmp_path) -> Iterator[str]:
    """`python -m relay.kartra.fake` in its own process, as the benchmarks and the
    end-to-end tests run it (a keep-alive server, unlike the `serve` fixture's); its base
    URL. Stopped and waited for at the end."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = ["--port", str(port), "--app-id", APP_ID, "--api-key", API_KEY]
    args += ["--api-password", API_PASSWORD, "--tags", "Customer", "--rate-limit", "1000"]
    log = (tmp_path / "fake.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "relay.kartra.fake", *args], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            requests.get(url + "/_fake/calls", timeout=0.5).raise_for_status()
            break
        except requests.RequestException:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise
            time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(15)
    log.close()


@pytest.fixture
def client(kartra_url: str) -> Iterator[KartraClient]:
    with KartraClient(kartra_url, timeout=(1.0, 2.0)) as client:
        yield client


@pytest.fixture
def closed_port_url() -> str:
    """A 127.0.0.1 URL nothing listens on: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/api"


class FunctionAdapter(BaseAdapter):
    """A mock transport: `handler(request) -> (status, body)` answers every request;
    a handler may also raise a requests exception to simulate the network."""

    def __init__(self, handler: Callable[[requests.PreparedRequest], tuple[int, Any]]) -> None:
        super().__init__()
        self.handler = handler
        self.sent: list[tuple[requests.PreparedRequest, Any]] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.sent.append((request, kwargs.get("timeout")))
        status, body = self.handler(request)
        response = requests.Response()
        response.status_code = status
        response._content = body if isinstance(body, bytes) else str(body).encode()
        response.encoding = "utf-8"
        response.request = request
        response.url = request.url or ""
        return response

    def close(self) -> None:
        pass


@pytest.fixture
def mock_client() -> Iterator[Callable[..., tuple[KartraClient, FunctionAdapter]]]:
    """Build a client whose requests are answered by a function instead of a network."""
    sessions = []

    def build(handler: Callable[[requests.PreparedRequest], tuple[int, Any]], **kwargs: Any):
        adapter = FunctionAdapter(handler)
        session = requests.Session()
        session.mount("https://", adapter)
        sessions.append(session)
        return KartraClient("https://kartra.invalid/api", session=session, **kwargs), adapter

    yield build
    for session in sessions:
        session.close()
