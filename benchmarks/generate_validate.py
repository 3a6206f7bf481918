"""Benchmark: generate N synthetic interactions, then validate them, each in its own process.

    .venv/bin/python benchmarks/generate_validate.py --interactions 1000000

Records wall time and peak resident memory (of the child process) of each step, and prints
a Markdown row for benchmarks/RESULTS.md. Target (issue 2): 1M interactions generated and
validated in under 2 minutes and 4 GB on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHOPREC = str(Path(sys.executable).with_name("shoprec"))


def measure(args: list[str]) -> tuple[float, float]:
    """Run a command in a child process; return (seconds, peak RSS in GB) of that child."""
    start = time.perf_counter()
    child = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    # wait4 gives this child's own rusage, not the maximum over every child so far.
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed with exit code {child.returncode}")
    return seconds, usage.ru_maxrss / 1024 / 1024


def main() -> None:
    """Parse arguments, run both steps, print the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--items", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    users = args.users or max(100, args.interactions // 20)
    items = args.items or max(50, args.interactions // 200)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "data"
        gen_s, gen_gb = measure([SHOPREC, "generate", "--users", str(users), "--items",
                                 str(items), "--interactions", str(args.interactions),
                                 "--seed", str(args.seed), "--out", str(out)])
        val_s, val_gb = measure([SHOPREC, "validate", "--interactions",
                                 str(out / "interactions.parquet"), "--items",
                                 str(out / "items.parquet"), "--output-dir",
                                 str(Path(tmp) / "validate")])
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")
    print("| step | interactions | users | items | seconds | peak RSS (GB) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(f"| generate | {args.interactions:,} | {users:,} | {items:,} | {gen_s:.1f} | "
          f"{gen_gb:.2f} |")
    print(f"| validate | {args.interactions:,} | {users:,} | {items:,} | {val_s:.1f} | "
          f"{val_gb:.2f} |")
    print(f"| total | | | | {gen_s + val_s:.1f} | {max(gen_gb, val_gb):.2f} |")


if __name__ == "__main__":
    main()
