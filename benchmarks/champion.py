"""Shared by the serving benchmarks: a registered ``mf`` champion over a synthetic catalogue.

    .venv/bin/python benchmarks/champion.py --workdir /tmp/shoprec-bench [--items 10000]

Generates synthetic data (default 100,000 users, 10,000 items, 1,000,000 interactions),
trains popularity and mf with ``shoprec train`` (the Prefect flow, its own temporary
Prefect server) into an MLflow SQLite store inside ``--workdir``, and reuses both on the
next call with the same sizes. Prints the tracking URI.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL_NAME = "bench-recommender"


def ensure_champion(workdir: Path, users: int, items: int, interactions: int,
                    seed: int = 1) -> tuple[str, Path]:
    """Return the MLflow tracking URI holding ``bench-recommender@champion`` (mf) and the
    data folder; build both if this ``workdir`` does not have them for these sizes."""
    workdir.mkdir(parents=True, exist_ok=True)
    tag = f"{users}-{items}-{interactions}-{seed}"
    data = workdir / f"data-{tag}"
    uri = f"sqlite:///{workdir / f'mlflow-{tag}.db'}"
    done = workdir / f"champion-{tag}.json"
    if done.exists():
        return uri, data
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri,
           "PREFECT_LOCAL_STORAGE_PATH": str(workdir / "prefect-storage")}
    env.pop("PREFECT_API_URL", None)
    shoprec = [sys.executable, "-m", "shoprec_cli"]
    subprocess.run([*shoprec, "generate", "--users", str(users), "--items", str(items),
                    "--interactions", str(interactions), "--seed", str(seed), "--out",
                    str(data)], check=True, cwd=ROOT, env=env)
    subprocess.run([*shoprec, "train", "--interactions", str(data / "interactions.parquet"),
                    "--items", str(data / "items.parquet"), "--models", "popularity,mf",
                    "--registered-model-name", MODEL_NAME, "--output-dir",
                    str(workdir / "runs"), "--summary-json", str(done)],
                   check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    summary = json.loads(done.read_text())
    if summary["winner"] != "mf" or "champion" not in summary["registered"]["aliases"]:
        done.unlink()
        raise SystemExit(f"expected mf as champion, got {summary['winner']} "
                         f"{summary['registered']}")
    return uri, data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that choose (or build) the champion: work folder and data sizes."""
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/shoprec-bench"))
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--interactions", type=int, default=1_000_000)


def main() -> None:
    """Build (or find) the champion and print its tracking URI."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args()
    print(ensure_champion(args.workdir, args.users, args.items, args.interactions)[0])


if __name__ == "__main__":
    main()
