"""The client's HTTP session: connections kept alive and shared by the threads that call,
and the environment's proxy settings honoured (read once, when the client is built)."""

import http.client
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import requests

from relay.kartra import KartraClient
from relay.kartra.fake import FakeKartra, create_app
from relay.kartra.form import encode
from tests.kartra.conftest import API_KEY, API_PASSWORD, APP_ID

READ_TAGS = {"actions": [{"cmd": "retrieve_account_tags"}]}


def peers(fake_url: str) -> list[str]:
    return [call["peer"] for call in requests.get(fake_url + "/_fake/calls", timeout=5).json()]


def test_the_fake_keeps_a_connection_alive_between_requests(fake_process) -> None:
    """As Kartra's own web server does; werkzeug's development server would not."""
    connection = http.client.HTTPConnection(urlsplit(fake_process).netloc, timeout=5)
    body = encode({"app_id": APP_ID, "api_key": API_KEY, "api_password": API_PASSWORD, **READ_TAGS})
    sockets = []
    for _ in range(2):
        connection.request(
            "POST", "/api", body, {"Content-Type": "application/x-www-form-urlencoded"}
        )
        response = connection.getresponse()
        assert response.status == 200 and response.read()
        sockets.append(connection.sock)  # None once the server closed it
    connection.close()
    assert sockets[0] is not None and sockets[1] is sockets[0]


def test_the_fake_counts_a_call_from_when_its_first_bytes_arrived(fake_process) -> None:
    """The rate limit counts calls by arrival, as Kartra does: by the kernel's stamp of
    the first bytes, not by when the fake's thread came to handle the call. Here the
    rest of the call follows its first line 0.4 s later; the call must count from the
    first line, on each of two requests over one kept-alive connection."""
    body = encode({"app_id": APP_ID, "api_key": API_KEY, "api_password": API_PASSWORD, **READ_TAGS})
    rest = (
        f"Host: fake\r\nContent-Length: {len(body)}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\n\r\n{body}"
    ).encode()
    sent = []
    with socket.create_connection(urlsplit(fake_process).netloc.split(":"), timeout=5) as sock:
        for _ in range(2):
            sent.append(time.time())
            sock.sendall(b"POST /api HTTP/1.1\r\n")
            time.sleep(0.4)
            sock.sendall(rest)
            response = http.client.HTTPResponse(sock)
            response.begin()
            assert response.status == 200 and response.read()
    stamps = [
        call["time"] for call in requests.get(fake_process + "/_fake/calls", timeout=5).json()
    ]
    assert len(stamps) == 2
    for at, stamp in zip(sent, stamps, strict=True):
        assert at <= stamp < at + 0.1


def test_calls_reuse_pooled_connections_from_every_thread(fake_process, credentials) -> None:
    with KartraClient(fake_process + "/api", timeout=(2, 5)) as client:
        for _ in range(3):
            assert client.call(credentials, READ_TAGS).http_status == 200
        assert len(set(peers(fake_process))) == 1
        with ThreadPoolExecutor(4) as pool:
            calls = list(pool.map(lambda _: client.call(credentials, READ_TAGS), range(12)))
    assert [call.http_status for call in calls] == [200] * 12
    assert len(peers(fake_process)) == 15
    assert len(set(peers(fake_process))) <= 4


def test_a_proxy_set_in_the_environment_carries_the_calls(wsgi, monkeypatch, credentials):
    fake = FakeKartra(app_id=APP_ID, accounts={API_KEY: API_PASSWORD})
    proxy = wsgi(create_app(fake))  # serves the request a client sends to a proxy too
    monkeypatch.setenv("http_proxy", proxy)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)

    with KartraClient("http://kartra.invalid/api", timeout=(2, 2)) as client:
        call = client.call(credentials, READ_TAGS)

    assert call.error is None and call.http_status == 200
    assert len(fake.call_log()) == 1


def test_written_runs_once_the_request_is_sent_before_the_answer_comes(fake, serve, credentials):
    # The limiter counts a call from when it was written; the answer comes 0.3 s later.
    fake.latency_ms = 300
    written = []
    with KartraClient(serve(fake), timeout=(2, 5)) as client:
        started = time.monotonic()
        call = client.call(credentials, READ_TAGS, lambda: written.append(time.monotonic()))
        answered = time.monotonic()
        assert client.call(credentials, READ_TAGS).http_status == 200  # none: no callback
    assert call.http_status == 200
    assert len(written) == 1
    assert written[0] - started < 0.2
    assert answered - written[0] >= 0.28


def test_written_does_not_run_for_a_request_never_sent(closed_port_url, credentials):
    written = []
    with KartraClient(closed_port_url, timeout=(1, 1)) as client:
        call = client.call(credentials, READ_TAGS, lambda: written.append(1))
    assert call.error and written == []
