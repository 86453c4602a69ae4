"""gunicorn's gthread worker, with a deadline for receiving each request.

gthread gives a connection a thread as soon as its first bytes arrive, and that thread
then blocks until the request is whole; gunicorn's `timeout` does not reach it (it
watches the worker's main loop, not its threads). A client that sends half a request
and stops, or trickles it a byte at a time, would hold the thread for ever: as many
such connections as threads stopped a web process (tests/e2e/test_slow_clients.py).

Here each request (request line, headers and body) must arrive within
`REQUEST_READ_TIMEOUT` seconds of its first byte. Past that, a connection still in its
headers is closed; a body the application is reading raises `SlowClient`, which the
app answers with 408. Sending an answer has its own limit (`WRITE_TIMEOUT` without
progress), so a client that never reads cannot hold a thread either.
"""

from __future__ import annotations

import socket
import time

from gunicorn.http.errors import NoMoreData
from gunicorn.workers.gthread import ThreadWorker

WRITE_TIMEOUT = 30.0


class SlowClient(NoMoreData):
    """The request did not arrive within REQUEST_READ_TIMEOUT; gunicorn closes the
    connection quietly, as for a client that went away."""

    def __init__(self, timeout: float):
        super().__init__()
        self.timeout = timeout

    def __str__(self) -> str:
        return f"request not received within {self.timeout:g} s"


class _Socket(socket.socket):
    """A client connection whose reads share one deadline per request."""

    read_timeout = 15.0
    deadline: float | None = None

    def setblocking(self, flag: bool) -> None:
        # gunicorn makes a socket blocking when a thread is to read it: blocking, but
        # never for ever.
        if flag:
            self.settimeout(WRITE_TIMEOUT)
        else:
            super().setblocking(False)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        now = time.monotonic()
        if self.deadline is None:
            self.deadline = now + self.read_timeout  # the request's first read
        remaining = self.deadline - now
        if remaining <= 0:
            raise SlowClient(self.read_timeout)
        current = self.gettimeout()  # gunicorn's own bound (a 2 s linger at close) stays
        self.settimeout(remaining if current is None else min(current, remaining))
        try:
            return super().recv(bufsize, flags)
        except TimeoutError:
            raise SlowClient(self.read_timeout) from None

    def sendall(self, data, flags: int = 0) -> None:
        self.settimeout(WRITE_TIMEOUT)
        super().sendall(data, flags)


class Listener:
    """The listening socket as gthread's `accept` sees it: connections come out as
    `connection_class` (a socket.socket subclass), with `attributes` set on each."""

    def __init__(self, listener: socket.socket, connection_class: type, **attributes):
        self.listener = listener
        self.connection_class = connection_class
        self.attributes = attributes

    def accept(self) -> tuple[socket.socket, object]:
        client, address = self.listener.accept()
        sock = self.connection_class(
            client.family, client.type, client.proto, fileno=client.detach()
        )
        for name, value in self.attributes.items():
            setattr(sock, name, value)
        return sock, address

    def getsockname(self):
        return self.listener.getsockname()


class DeadlineWorker(ThreadWorker):
    def init_process(self) -> None:
        from relay.arenas import limit_malloc_arenas
        from relay.config import Config  # in the worker: gunicorn's master never needs it

        limit_malloc_arenas()
        self.read_timeout = Config.from_env().request_read_timeout
        super().init_process()

    def accept(self, listener: socket.socket) -> None:
        super().accept(Listener(listener, _Socket, read_timeout=self.read_timeout))

    def handle(self, conn):
        if isinstance(conn.sock, _Socket):
            conn.sock.deadline = None  # a new request: its clock starts at its first read
        return super().handle(conn)
