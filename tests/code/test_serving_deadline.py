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


def _closed(connection: socket.socket, within: float) -> bool:
    connection.settimeout(within)
    try:
        return connection.recv(100) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


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
    for connection in (idle, headers, body):
        assert _closed(connection, 3 * DEADLINE)
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
