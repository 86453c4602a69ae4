"""The benchmarks' open-loop generator (bench/openloop.py) against a small keep-alive
server on 127.0.0.1 whose answer time is known."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench import openloop


@contextmanager
def server(answer_after: float) -> Iterator[str]:
    """Answers every POST after `answer_after` s: 202, or 500 when the body says so."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(answer_after)
            self.send_response(500 if body == b"fail" else 202)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/hooks/x"
    finally:
        httpd.shutdown()
        httpd.server_close()


def posts(bodies: list[bytes]) -> list[bytes]:
    return [openloop.raw_post("127.0.0.1", 1, "/hooks/x", {}, body) for body in bodies]


def test_a_server_that_keeps_up_is_timed_by_its_answers():
    with server(answer_after=0.02) as url:
        bodies = [b"fail" if n % 10 == 0 else b"{}" for n in range(20)]
        result = asyncio.run(openloop.run(url, posts(bodies), 20, 1, 4))
    assert result["due"] == result["answered"] == 20
    assert result["statuses"] == {"202": 18, "500": 2}
    assert result["errors"] == 0
    assert 20 <= result["p50"] < 200


def test_requests_queued_behind_a_slow_server_count_their_wait():
    """One connection, due every 25 ms, answered in 50 ms: request n is due at 25n ms
    and answered at about 50(n + 1) ms. A client that timed each request from when it
    sent it would see 50 ms throughout."""
    with server(answer_after=0.05) as url:
        result = asyncio.run(openloop.run(url, posts([b"{}"] * 40), 40, 1, 1))
    assert result["answered"] == 40
    assert result["p50"] > 400
    assert result["max"] > 900
    assert result["rate"] < 25


def test_it_refuses_to_run_short_of_requests():
    with pytest.raises(ValueError, match="10 requests needed, 5 given"):
        asyncio.run(openloop.run("http://127.0.0.1:1/x", [b""] * 5, 10, 1, 1))
