"""uvicorn's HTTP protocol with a deadline on reading each request.

uvicorn closes a keep-alive connection that stays idle, but not one that sends a request
slowly: its keep-alive timer is cancelled by the first byte that comes, and nothing bounds
the time a request's headers or body take after it. 25 sockets sending one header line
every 5 s held a server with ``--max-connections 20`` at 503 for everyone, ``/ping``
included, for as long as they liked (a "slowloris"). This protocol closes a connection
whose request has not fully arrived within :attr:`Limits.request_seconds` of the
connection's opening or of its previous answer; a request fully read is never cut while
the model works on it.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger(__name__)

#: The answer past ``--max-connections``, in the one error shape every other refusal has.
BUSY = (b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "server busy: more open '
        b'connections than --max-connections; send the request again shortly"}')


async def busy(scope: Any, receive: Any, send: Any) -> None:
    """The 503 past uvicorn's concurrency limit, as JSON with ``Retry-After``.

    Its own was ``text/plain`` "Service Unavailable", which a strict JSON client (an app's
    decoder) failed on, without the security headers every other answer carries.
    """
    from shoprec.serving.server import _SECURITY_HEADERS

    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(BUSY)).encode()),
        (b"retry-after", b"1"), (b"connection", b"close"), *_SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": BUSY, "more_body": False})


class DeadlineHttpProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` that closes a connection slow to send its request."""

    #: The deadline in seconds, read once per worker process from the environment.
    _seconds: float | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn names the app it answers with past the limit in its module; this server's
        # processes use this protocol alone.
        httptools_impl.service_unavailable = busy
        self._read = 0  # requests fully received on this connection
        self._answered = 0  # answers sent on it
        self._deadline: asyncio.TimerHandle | None = None
        self._bytes = False  # whether request bytes came since the deadline was set
        self._unsent = 0  # the answer's bytes not yet taken by the client, at the last look

    @classmethod
    def seconds(cls) -> float:
        """The time a request may take to arrive (``serve --request-timeout``)."""
        if cls._seconds is None:
            from shoprec.serving.server import Limits

            cls._seconds = float(Limits().request_seconds)
        return cls._seconds

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Open the connection and start the first request's deadline."""
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        """Close the connection and drop its deadline."""
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        """A request has begun: noted, so an expired deadline tells slow from idle.

        (Not any bytes: the rest of a body an early 413 answered is no new request, and a
        408 after it was a second answer to one request.)
        """
        self._bytes = True
        super().on_message_begin()

    def resume_writing(self) -> None:
        """The client is reading its answer again: the next deadline counts from now.

        The deadline starts when an answer is handed over, and a 30 MB answer read over a
        slow link took longer: the connection was closed under a client still reading.
        """
        super().resume_writing()
        self._unsent = 0
        if not self.transport.is_closing():
            self._arm()

    def pause_writing(self) -> None:
        """The client is behind on its answer: the deadline now watches it read."""
        super().pause_writing()
        self._unsent = 0
        if not self.transport.is_closing():
            self._arm()

    def on_message_complete(self) -> None:
        """A request has fully arrived: it is no longer bound by the deadline."""
        self._read += 1
        super().on_message_complete()

    def on_response_complete(self) -> None:
        """An answer went out: the next request's deadline starts now."""
        self._answered += 1
        self._unsent = 0
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._bytes = False
        self._deadline = self.loop.call_later(self.seconds(), self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        who = "{}:{}".format(*self.client) if self.client else "?"
        unsent = self.transport.get_write_buffer_size() + self._kernel_unsent()
        if unsent:
            if unsent < self._unsent or not self._unsent:
                self._unsent = unsent  # the client is still reading its answer
                self._arm()
                return
            # A client that read nothing of its answer for a whole deadline: close() would
            # wait for the unsent bytes for ever, holding them (58 MB each) in memory.
            logger.info("dropped a connection from %s: it read nothing of its answer for "
                        "over %g s (%d bytes unsent)", who, self.seconds(), unsent)
            self.transport.abort()
            return
        if self._read > self._answered:
            return  # a request read in full is being answered: its answer re-arms
        if self._bytes:
            # Part of a request came: say why, in the error shape, before closing.
            self.transport.write(_TIMED_OUT)
            logger.info("closed a connection from %s: no whole request within %g s", who,
                        self.seconds())
        else:
            logger.debug("closed an idle connection from %s after %g s", who, self.seconds())
        self.transport.close()

    def _kernel_unsent(self) -> int:
        """Bytes in the kernel's send queue, not yet taken by the client (Linux; else 0).

        The transport's own buffer stays put while the kernel's (megabytes) drains: a
        client reading at 200 KB/s looked stalled, and was cut mid-answer.
        """
        try:
            import fcntl
            import termios
        except ImportError:  # not a POSIX system
            return 0
        sock = self.transport.get_extra_info("socket")
        if sock is None or not hasattr(termios, "TIOCOUTQ"):
            return 0
        try:
            queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        except OSError:
            return 0
        return int(struct.unpack("i", queued)[0])


_TIMEOUT_BODY = (b'{"error_code": "INVALID_PARAMETER_VALUE", "message": "the request did not '
                 b'arrive whole within the server\'s --request-timeout; send it again, '
                 b'faster or smaller"}')
#: The answer to a request cut by the deadline (it had started to arrive).
_TIMED_OUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
              b"content-length: " + str(len(_TIMEOUT_BODY)).encode()
              + b"\r\nconnection: close\r\nx-content-type-options: nosniff\r\n"
              b"cache-control: no-store\r\n\r\n" + _TIMEOUT_BODY)
