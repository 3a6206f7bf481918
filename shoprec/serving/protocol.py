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

    def on_message_complete(self) -> None:
        """A request has fully arrived: it is no longer bound by the deadline."""
        self._read += 1
        super().on_message_complete()

    def on_response_complete(self) -> None:
        """An answer went out: the next request's deadline starts now."""
        self._answered += 1
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.seconds(), self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self._read > self._answered or self.transport.is_closing():
            return  # a request read in full is being answered: its answer re-arms
        logger.info("closed a connection from %s: no whole request within %g s",
                    "{}:{}".format(*self.client) if self.client else "?", self.seconds())
        self.transport.close()
