"""Benchmark: real-time latency of ``shoprec serve`` on loopback.

    .venv/bin/python benchmarks/serving.py [--workers 2] [--requests 5000] [--mlflow-server]

Serves ``models:/bench-recommender@champion`` (an mf model over 10,000 items, see
``benchmarks/champion.py``) with ``shoprec serve`` (MLflow's scoring server app with
shoprec's records fast path; ``--mlflow-server``: MLflow's stock server) and sends a
bounded number of single-user requests (k=10; a known user, half of them with two recent
items) at concurrency 1 and 8, each client thread on its own keep-alive connection.
Reports p50/p95/p99 latency and throughput. The load generator runs on the same 2 cores.
``shoprec serve`` runs as users get it: the storefront page and live sessions on (500
events from 250 shoppers are posted first, so answers look sessions up and find some).
Targets: p50 under 10 ms and p99 under 50 ms at concurrency 8.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from champion import MODEL_NAME, ROOT, add_arguments, ensure_champion


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post_event(port: int, event: dict) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/events",
                                     data=json.dumps(event).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def _wait_ready(port: int, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("the model server exited")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit("the model server did not start")


def load(port: int, bodies: list[bytes], concurrency: int) -> tuple[np.ndarray, float, int]:
    """Send every body once, ``concurrency`` at a time; latencies (ms), seconds, errors."""
    latencies = np.zeros(len(bodies))
    errors = [0]
    cursor = iter(range(len(bodies)))
    lock = threading.Lock()

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                index = next(cursor, None)
            if index is None:
                break
            began = time.perf_counter()
            connection.request("POST", "/invocations", bodies[index],
                               {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            latencies[index] = (time.perf_counter() - began) * 1000
            if response.status != 200:
                with lock:
                    errors[0] += 1
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.perf_counter() - began, errors[0]


def large_in_flight(port: int, body: bytes, clients: int, stop: threading.Event) -> list:
    """Keep ``clients`` connections sending ``body`` (a large batch) until ``stop``; returns
    the latencies (ms) of the large requests, filled as they complete."""
    done: list[float] = []

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while not stop.is_set():
            began = time.perf_counter()
            connection.request("POST", "/invocations", body,
                               {"Content-Type": "application/json"})
            connection.getresponse().read()
            done.append((time.perf_counter() - began) * 1000)
        connection.close()

    for _ in range(clients):
        threading.Thread(target=client, daemon=True).start()
    return done


def main() -> None:
    """Run the benchmark and print Markdown for RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--workers", type=int, default=1, help="Server processes.")
    parser.add_argument("--no-sessions", action="store_true",
                        help="Serve with live sessions off (--sessions '').")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--large-in-flight", type=int, default=0,
                        help="Also measure while this many clients keep sending large "
                        "batches (--large-records records, k=100 each).")
    parser.add_argument("--large-records", type=int, default=1000)
    parser.add_argument("--mlflow-server", action="store_true",
                        help="Serve with MLflow's stock `mlflow models serve`.")
    args = parser.parse_args()
    uri, data = ensure_champion(args.workdir, args.users, args.items, args.interactions)

    import pandas as pd

    rng = np.random.default_rng(args.seed)
    interactions = pd.read_parquet(data / "interactions.parquet", columns=["user_id", "item_id"])
    users = interactions["user_id"].unique()
    items = interactions["item_id"].unique()
    bodies = []
    for _ in range(args.requests + 100):
        record = {"user_id": str(rng.choice(users)), "k": 10}
        if rng.random() < 0.5:
            record["recent_items"] = [str(x) for x in rng.choice(items, 2, replace=False)]
        bodies.append(json.dumps({"dataframe_records": [record]}).encode())

    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    sessions = tempfile.mkdtemp(prefix="shoprec-bench-sessions-")
    server = subprocess.Popen(
        [sys.executable, "-m", "shoprec_cli", "serve", "--port", str(port),
         "--registered-model-name", MODEL_NAME, "--workers", str(args.workers),
         "--sessions", "" if args.no_sessions else f"{sessions}/sessions.sqlite",
         *(["--mlflow-server"] if args.mlflow_server else [])],
        cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        began = time.perf_counter()
        _wait_ready(port, server)
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
              f"{platform.python_version()}")
        print(f"model: {MODEL_NAME}@champion (mf), {len(users):,} users, {len(items):,} items;"
              f" {'mlflow models serve' if args.mlflow_server else 'shoprec serve'},"
              f" server workers {args.workers}; ready in {time.perf_counter() - began:.1f} s\n")
        if not args.mlflow_server and not args.no_sessions:
            # Live sessions on, as `shoprec serve` runs by default: 500 events from 250
            # shoppers first, so that answers look sessions up and find some.
            shoppers = rng.choice(users, 250, replace=False)
            for n in range(500):
                event = {"user_id": str(shoppers[n % 250]), "item_id": str(rng.choice(items)),
                         "event": "view"}
                _post_event(port, event)
        load(port, bodies[:100], 2)  # warm-up: first requests pay for lazy imports
        print("| concurrency | requests | p50 ms | p95 ms | p99 ms | max ms | requests/s "
              "| errors |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            latencies, seconds, errors = load(port, bodies[100:], concurrency)
            p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
            print(f"| {concurrency} | {len(latencies):,} | {p50:.1f} | {p95:.1f} | {p99:.1f} | "
                  f"{latencies.max():.1f} | {len(latencies) / seconds:,.0f} | {errors} |")
        if args.large_in_flight:
            # A slow request must not block the others: small-request latency while large
            # batches are being answered beside them.
            large = json.dumps({"dataframe_records": [
                {"user_id": str(u), "k": 100}
                for u in rng.choice(users, args.large_records)]}).encode()
            stop = threading.Event()
            done = large_in_flight(port, large, args.large_in_flight, stop)
            time.sleep(1.0)
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                latencies, seconds, errors = load(port, bodies[100:], concurrency)
                p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
                print(f"| {concurrency} + {args.large_in_flight} large | {len(latencies):,} | "
                      f"{p50:.1f} | {p95:.1f} | {p99:.1f} | {latencies.max():.1f} | "
                      f"{len(latencies) / seconds:,.0f} | {errors} |")
            stop.set()
            print(f"\nlarge requests ({args.large_records} records, k=100, "
                  f"{len(large) / 1024:.0f} KiB): {len(done)} answered, median "
                  f"{np.median(done) if done else float('nan'):.0f} ms")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
