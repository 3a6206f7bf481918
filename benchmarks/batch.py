"""Benchmark: batch recommendations (top 10 of every known user) by an mf champion.

    .venv/bin/python benchmarks/batch.py [--workdir /tmp/shoprec-bench] [--items 10000]

Loads ``models:/bench-recommender@champion`` (see ``benchmarks/champion.py``) and runs
:func:`shoprec.batch.write_recommendations`, the function the batch-recommendations flow's
task calls, writing date-partitioned Parquet to a temporary folder. Reports users per
second (scoring + top K + Parquet writing; model loading excluded) and the whole flow's wall
time, run through Prefect (temporary server) in a child process. Target: at least 20,000
users per second for mf on 10,000 items on 2 cores.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from champion import MODEL_NAME, ROOT, add_arguments, ensure_champion


def main() -> None:
    """Run the benchmark and print Markdown for RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4096)
    args = parser.parse_args()
    uri, _ = ensure_champion(args.workdir, args.users, args.items, args.interactions)
    os.environ["MLFLOW_TRACKING_URI"] = uri

    from shoprec.batch import write_recommendations
    from shoprec.registry.loading import load_bundle

    began = time.perf_counter()
    bundle, version = load_bundle(MODEL_NAME)
    loaded = time.perf_counter() - began
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")
    print(f"model: {MODEL_NAME} version {version} ({bundle.meta['model']}), "
          f"{len(bundle.users):,} users, {len(bundle.items):,} items; loaded in {loaded:.1f} s\n")
    print("| run | users | rows | seconds | users/s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(3):
            result = write_recommendations(bundle, tmp, args.k, args.batch_size, version)
            print(f"| {run + 1} | {result.users:,} | {result.rows:,} | {result.seconds:.2f} | "
                  f"{result.users_per_second:,.0f} |")
        env = {**os.environ, "PREFECT_LOCAL_STORAGE_PATH": f"{tmp}/prefect"}
        env.pop("PREFECT_API_URL", None)
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "shoprec_cli", "batch", "--registered-model-name",
                        MODEL_NAME, "--output-dir", f"{tmp}/flow", "--k", str(args.k)],
                       check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        print(f"\n`shoprec batch` (the Prefect flow, incl. temporary server start and model "
              f"loading): {time.perf_counter() - began:.1f} s wall")


if __name__ == "__main__":
    main()
