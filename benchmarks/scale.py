"""Benchmark: the whole training pipeline at growing sizes, to see the growth curve.

    .venv/bin/python benchmarks/scale.py                       # 1M, 3M and 10M interactions
    .venv/bin/python benchmarks/scale.py --sizes 1000000 --models popularity,mf

For each size, synthetic data with 1 user per 20 interactions and 1 item per 200
(1M: 50,000 users, 5,000 items; 10M: 500,000 users, 50,000 items) is generated with
``shoprec generate`` (timed, peak memory of its process) and the training flow runs on it
through ``benchmarks/retail.py`` in a child process (wall time, peak memory, and per step:
the Prefect task's duration and the flow process's peak RSS during it). Prints Markdown for
RESULTS.md: one table per size, then time and memory relative to the smallest size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from probe import describe  # benchmarks/probe.py, beside this script

ROOT = Path(__file__).resolve().parents[1]


def _timed(command: list[str]) -> tuple[float, float]:
    """Run ``command``; its wall seconds and peak RSS (GB)."""
    began = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}")
    return time.perf_counter() - began, usage.ru_maxrss / 1024 / 1024


def main() -> None:
    """Run every size and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,3000000,10000000")
    parser.add_argument("--models", default=None, help="Candidates (default: all).")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--network-slots", type=int, default=None,
                        help="Networks trained at a time (0: no limit; default: the flow's).")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for size in sizes:
            users, items = size // 20, size // 200
            data = Path(tmp) / f"syn{size}"
            gen_seconds, gen_gb = _timed([
                sys.executable, "-m", "shoprec_cli", "generate", "--users", str(users),
                "--items", str(items), "--interactions", str(size), "--seed", "1",
                "--out", str(data)])
            out = Path(tmp) / f"run{size}.json"
            command = [sys.executable, "benchmarks/retail.py", "--interactions",
                       str(data / "interactions.parquet"), "--items",
                       str(data / "items.parquet"), "--json-out", str(out)]
            if args.models:
                command += ["--models", args.models]
            if args.network_slots is not None:
                command += ["--network-slots", str(args.network_slots)]
            subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
            result = json.loads(out.read_text())
            rows.append((size, users, items, gen_seconds, gen_gb, result))
            _print_size(size, users, items, gen_seconds, gen_gb, result)
    base = rows[0]
    print("\n| interactions | generate s | pipeline s | pipeline peak GB | time vs first "
          "| memory vs first |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for size, _, _, gen_seconds, _, result in rows:
        print(f"| {size:,} | {gen_seconds:.1f} | {result['wall_seconds']:.1f} | "
              f"{result['peak_rss_gb']:.2f} | "
              f"{result['wall_seconds'] / base[5]['wall_seconds']:.1f}x | "
              f"{result['peak_rss_gb'] / base[5]['peak_rss_gb']:.1f}x |")


def _print_size(size: int, users: int, items: int, gen_seconds: float, gen_gb: float,
                result: dict) -> None:
    summary = result["summary"]
    print(f"\n### {size:,} interactions ({users:,} users, {items:,} items)\n")
    print(f"generate: {gen_seconds:.1f} s, peak {gen_gb:.2f} GB; pipeline: "
          f"{result['wall_seconds']:.1f} s, peak {result['peak_rss_gb']:.2f} GB; winner "
          f"{summary['winner']}; machine probe (benchmarks/probe.py, s) before "
          f"{describe(result['probe_before'])}, after {describe(result['probe_after'])}\n")
    print("| model | status | test ndcg@10 | train s | refit s | note |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for entry in summary["leaderboard"]:
        value = entry["test"].get("ndcg@10")
        print(f"| {entry['model']} | {entry['status']} | "
              f"{'-' if value is None else f'{value:.4f}'} | {entry['train_seconds']:.1f} | "
              f"{entry.get('refit_seconds', 0.0):.1f} | {(entry.get('error') or '')[:80]} |")
    print("\n| step | seconds | peak GB |")
    print("| --- | ---: | ---: |")
    for step in result["steps"]:
        peak = step.get("peak_gb")
        print(f"| {step['task']} | {step['seconds']:.1f} | "
              f"{'-' if peak is None else f'{peak:.2f}'} |")


if __name__ == "__main__":
    main()
