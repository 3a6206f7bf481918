"""Benchmark: the latency of the temporary Prefect server that a command starts for itself.

    .venv/bin/python benchmarks/temporary_server.py            # e.g. "keep-alive POST 5.3 ms"

Starts ``TemporaryServer`` (flows/server_guard.py) as a command without PREFECT_API_URL
does, then times requests three ways: a new connection per GET of ``/api/health``, a new
connection per POST of ``/api/flows/filter``, and POSTs on one kept-alive connection, as
Prefect's own client sends them. A server that leaves Nagle's algorithm on answers the
last kind about 40 ms late (the delayed ACK); see ``bound_socket``.
"""

from __future__ import annotations

import argparse
import http.client
import os
import time
import urllib.request
from collections.abc import Callable


def measure(requests: int = 50) -> dict[str, float]:
    """Mean milliseconds of each kind of request, ``requests`` of each after one warm-up."""
    from shoprec_flows.server_guard import TemporaryServer

    environment = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    environment.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    server = TemporaryServer(environment, timeout=120)
    server.launch()
    try:
        server.wait()
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)

        def health() -> None:
            opener.open(f"{server.api_url}/health", timeout=10).read()

        def post() -> None:
            request = urllib.request.Request(
                f"{server.api_url}/flows/filter", data=b"{}", method="POST",
                headers={"Content-Type": "application/json"})
            opener.open(request, timeout=10).read()

        def kept_alive() -> None:
            connection.request("POST", "/api/flows/filter", body=b"{}",
                               headers={"Content-Type": "application/json"})
            connection.getresponse().read()

        kinds: dict[str, Callable[[], None]] = {
            "new connection, GET /api/health": health,
            "new connection, POST /api/flows/filter": post,
            "keep-alive POST /api/flows/filter": kept_alive}
        times = {}
        for name, send in kinds.items():
            send()
            began = time.perf_counter()
            for _ in range(requests):
                send()
            times[name] = (time.perf_counter() - began) / requests * 1000
        connection.close()
        return times
    finally:
        server.stop()


def main() -> None:
    """Print the mean latency of each kind of request."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50, help="Requests of each kind.")
    args = parser.parse_args()
    for name, milliseconds in measure(args.requests).items():
        print(f"{name}: {milliseconds:.1f} ms")


if __name__ == "__main__":
    main()
