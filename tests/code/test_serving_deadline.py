"""The real-time server's deadline on reading a request (``serve --request-timeout``).

uvicorn closed idle keep-alive connections, but the first byte of a request cancelled that
timer: 25 sockets sending a header line every 5 s held every connection of a server, so
every other client, its load balancer's /ping included, got 503 for as long as they liked.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from shoprec.serving.protocol import DeadlineHttpProtocol

DEADLINE = 1.0


async def _app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/slow":
        import asyncio

        await asyncio.sleep(DEADLINE * 2)  # the model at work: never cut
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body) + 2).encode())]})
    await send({"type": "http.response.body", "body": b"ok" + body})


@pytest.fixture()
def port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.setattr(DeadlineHttpProtocol, "_seconds", None)
    monkeypatch.setenv("SHOPREC_SERVE_REQUEST_SECONDS", "1")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(_app, host="127.0.0.1", port=free,
                                           http=DeadlineHttpProtocol, log_level="warning",
                                           limit_concurrency=4, timeout_keep_alive=30))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(100):
        if server.started:
            break
        time.sleep(0.05)
    yield free
    server.should_exit = True
    thread.join(10)


def _closed(connection: socket.socket, within: float) -> bytes | None:
    """What the server sent before closing the connection, or ``None``: still open."""
    connection.settimeout(within)
    said = b""
    try:
        while chunk := connection.recv(4096):
            said += chunk
    except TimeoutError:
        return None
    except OSError:
        pass
    return said


def _get(port: int, path: str = "/ping", body: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: "
                           f"{len(body)}\r\n\r\n".encode() + body)
        return connection.recv(200)


def test_slow_and_idle_clients_are_cut_and_others_answered(port: int) -> None:
    assert DeadlineHttpProtocol.seconds() == DEADLINE
    idle = socket.create_connection(("127.0.0.1", port))
    headers = socket.create_connection(("127.0.0.1", port))
    headers.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n")
    body = socket.create_connection(("127.0.0.1", port))
    body.sendall(b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"a")
    started = time.monotonic()
    for _ in range(4):  # a header line now and then: each one cancelled uvicorn's own timer
        time.sleep(DEADLINE / 2)
        try:
            headers.sendall(b"X-A: b\r\n")
        except OSError:
            break
    # One that sent part of a request is told why (408); an idle one is just closed.
    assert _closed(idle, 3 * DEADLINE) == b""
    for connection in (headers, body):
        said = _closed(connection, 3 * DEADLINE)
        assert said is not None and said.startswith(b"HTTP/1.1 408 Request Timeout"), said
        assert b"--request-timeout" in said
    for connection in (idle, headers, body):
        connection.close()
    assert time.monotonic() - started < 6 * DEADLINE
    # The connections were given back: the server answers again (with 4, it was 503).
    assert _get(port).startswith(b"HTTP/1.1 200")


def test_a_request_being_answered_and_a_kept_alive_connection_are_not_cut(port: int) -> None:
    assert _get(port, "/slow", b"xyz").endswith(b"okxyz")  # answered after 2 deadlines
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        for _ in range(2):  # each answer gives the next request a whole deadline again
            time.sleep(DEADLINE * 0.7)
            connection.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            assert connection.recv(200).startswith(b"HTTP/1.1 200")


def test_a_busy_server_answers_in_the_error_shape(port: int) -> None:
    """Past --max-connections uvicorn answered text/plain "Service Unavailable": a mobile
    client's strict JSON decoder failed on it."""
    import json

    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    for connection in held:
        connection.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n")  # not finished
    time.sleep(0.2)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while chunk := connection.recv(4096):  # the busy answer closes the connection
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503") and b"content-type: application/json" in head
    assert b"retry-after: 1" in head and b"x-content-type-options: nosniff" in head
    assert json.loads(body)["error_code"] == "TEMPORARILY_UNAVAILABLE"
    for connection in held:
        connection.close()


def test_a_client_that_stops_reading_its_answer_is_dropped(
        port: int, caplog: pytest.LogCaptureFixture) -> None:
    """A second reader's: clients that read 1 KB of a 30 MB answer and stopped held 58 MB
    each until the server stopped (close() waits for unsent bytes), logged as closed."""
    big = b"x" * 8_000_000
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting
    with caplog.at_level("INFO", logger="shoprec.serving.protocol"):
        stalled.connect(("127.0.0.1", port))
        stalled.sendall(f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {len(big)}"
                        "\r\n\r\n".encode() + big)
        time.sleep(DEADLINE * 4)  # reads nothing of the 8 MB echoed back
    stalled.close()
    assert "it read nothing of its answer for over 1 s" in caplog.text, caplog.text
    assert _get(port).startswith(b"HTTP/1.1 200")


def test_a_client_reading_its_answer_slowly_gets_all_of_it(port: int) -> None:
    """The deadline watches a large answer being read: progress keeps the connection.

    A final reader's: at 200 KB/s the answer drained from the kernel's queue while the
    transport's own buffer stood still, and the client was cut mid-answer.
    """
    body = b"y" * 700_000
    reader = socket.socket()
    reader.connect(("127.0.0.1", port))
    reader.sendall(f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
                   .encode() + body)
    reader.settimeout(10)
    received, started = b"", time.monotonic()
    while not received.endswith(body[-100:]) or len(received) < len(body):
        chunk = reader.recv(8_192)
        if not chunk:
            break
        received += chunk
        time.sleep(0.05)  # about 160 KB/s
    reader.close()
    assert time.monotonic() - started > 2 * DEADLINE  # slower than two deadlines
    assert received.endswith(b"ok" + body), len(received)


def test_bytes_queued_in_the_kernel_count_as_unsent() -> None:
    """Progress is read from the kernel's send queue too: the transport's buffer stood
    still while megabytes drained from the kernel's, and a reader at 200 KB/s was cut."""
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("the kernel's queue is read on Linux")
    sender, receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with sender, receiver:
        sender.setblocking(False)
        try:
            while True:
                sender.send(b"z" * 65_536)
        except BlockingIOError:
            pass  # the kernel's buffers are full: nothing read

        class Transport:
            def get_extra_info(self, name: str):
                return sender if name == "socket" else None

        protocol = DeadlineHttpProtocol.__new__(DeadlineHttpProtocol)
        protocol.transport = Transport()
        assert protocol._kernel_unsent() > 0
        receiver.setblocking(False)
        while True:  # read it all: nothing left queued
            try:
                if not receiver.recv(1 << 20):
                    break
            except BlockingIOError:
                break
        assert protocol._kernel_unsent() == 0
