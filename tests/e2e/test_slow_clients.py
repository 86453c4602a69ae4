"""Slow clients against the real server: a request must arrive whole within
REQUEST_READ_TIMEOUT, so connections that stall or trickle cannot hold gunicorn's
threads. Before relay/gunicorn_worker.py, eight stalled connections (the threads of
`python -m relay serve`) stopped the relay answering anyone."""

import select
import socket
import time

DEMO = {"email": "patient@example.com"}
HEADERS_ONLY = b"POST /hooks/demo-form HTTP/1.1\r\nHost: relay\r\nContent-Ty"
HALF_A_BODY = (
    b"POST /hooks/demo-form HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
    b'Content-Length: 100\r\n\r\n{"email": '
)


def connect(relay, first: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    sock.sendall(first)
    return sock


def answer(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    return data


def test_stalled_clients_are_let_go_and_others_are_served(relay_factory):
    relay = relay_factory(REQUEST_READ_TIMEOUT="1.5").start()  # one process, 8 threads
    in_headers = [connect(relay, HEADERS_ONLY) for _ in range(8)]
    in_body = [connect(relay, HALF_A_BODY) for _ in range(8)]
    time.sleep(0.2)
    started = time.monotonic()
    served = relay.post("demo-form", data=DEMO)
    assert served.status_code == 200
    assert time.monotonic() - started < 6
    assert {answer(sock) for sock in in_headers} == {b""}  # closed: no request to answer
    for sock in in_body:
        refused = answer(sock)
        assert refused.startswith(b"HTTP/1.1 408 ")
        assert b"request not received within 1.5 s (REQUEST_READ_TIMEOUT)" in refused
    assert time.monotonic() - started < 8
    assert len(relay.events()) == 1
    assert "Traceback" not in relay.process.output()


def test_a_client_trickling_its_headers_is_cut_off(relay_factory):
    relay = relay_factory(REQUEST_READ_TIMEOUT="1").start()
    sock = connect(relay, b"POST /hooks/demo-form HTTP/1.1\r\nX-Slow: ")
    started = time.monotonic()
    closed = False
    while not closed and time.monotonic() - started < 6:
        try:
            sock.sendall(b"a")
        except OSError:
            break
        if select.select([sock], [], [], 0.2)[0]:
            closed = sock.recv(1024) == b""
    elapsed = time.monotonic() - started
    sock.close()
    assert 0.8 < elapsed < 3, elapsed
    assert relay.events() == []


FORM = b"email=cut.short%40example.com&first_name=Jonathan"
FORM_HEAD = (
    b"POST /hooks/demo-form HTTP/1.1\r\nHost: relay\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\n"
)


def refused(relay, request: bytes, *, hang_up: bool) -> bytes:
    """What the relay answers `request` (the client stops writing after it when
    `hang_up`): a 400, with nothing stored and no traceback in the log."""
    sock = connect(relay, request)
    if hang_up:
        sock.shutdown(socket.SHUT_WR)
    answered = answer(sock)
    assert answered.startswith(b"HTTP/1.1 400 ")
    assert relay.events() == []
    assert "Traceback" not in relay.process.output()
    return answered


def test_a_body_shorter_than_its_content_length_is_refused_not_stored(relay_factory):
    """A client whose upload drops: gunicorn hands the app a short read, and the
    part that came would be a garbled event (`cut.short%4` for an email)."""
    relay = relay_factory().start()
    request = FORM_HEAD + b"Content-Length: %d\r\n\r\n" % len(FORM) + FORM[:22]
    expected = f"the body ended after 22 of the {len(FORM)} bytes of its Content-Length"
    assert expected.encode() in refused(relay, request, hang_up=True)


def test_a_chunked_body_cut_off_is_refused_not_stored(relay_factory):
    relay = relay_factory().start()
    request = FORM_HEAD + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(FORM) + FORM[:22]
    assert b"the body ended before it was complete" in refused(relay, request, hang_up=True)


def test_a_chunked_body_with_broken_framing_is_refused_not_stored(relay_factory):
    relay = relay_factory().start()
    request = FORM_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + FORM + b"\r\n0\r\n\r\n"
    assert b"Invalid chunk size" in refused(relay, request, hang_up=False)
