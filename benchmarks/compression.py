"""Benchmark: what --quantize and --prune-top do to each family's published model.

    .venv/bin/python benchmarks/compression.py [--models ease,mf,content,vae,dae,cfgan]

Each family is fitted on Online Retail's training part (temporal 30/30; values chosen on
validation: λ, smoothing, early stopping), saved as trained, then loaded and saved again
under each compression: float16, int8, and for ease pruning to the top 200 or 50 weights
per item (alone and with int8). For each: the model folder's size, the time to load it
(best of 3), the p50 latency of a single-shopper top 10 (200 known shoppers, one at a
time) and test ndcg@10 (scored from training + validation rows). Prints Markdown.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from retail_parts import temporal_parts  # noqa: E402

RETAIL = ROOT.parent / "shared" / "data" / "online_retail.csv.gz"


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def main() -> None:
    """Fit, compress, reload and measure each family."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", default=str(RETAIL))
    parser.add_argument("--models", default="ease,mf,content,vae,dae,cfgan")
    args = parser.parse_args()

    from shoprec.evaluation import evaluate
    from shoprec.models import load_model
    from shoprec.training import fit_candidate

    encoded, items = temporal_parts(args.interactions)
    history = encoded.test_history
    users = np.flatnonzero(np.diff(history.indptr) > 0)
    asked = np.random.default_rng(0).choice(users, size=200, replace=False)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; data: {args.interactions}; "
          f"{encoded.train.shape[1]:,} items\n")
    print("| family | stored as | size MB | load s | p50 ms (one shopper) | test ndcg@10 |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name in args.models.split(","):
        params = {"seed": 42} if name in ("vae", "dae", "cfgan", "mf") else {}
        model, _ = fit_candidate(name, params, encoded.train, items, encoded)
        variants: list[tuple[str, str | None, int | None]] = [
            ("as trained (float32)", None, None), ("float16", "float16", None),
            ("int8", "int8", None)]
        if name == "ease":
            variants += [("top 200 per item", None, 200), ("top 50 per item", None, 50),
                         ("top 200 per item, int8", "int8", 200)]
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp) / "base"
            model.save(base)
            for label, precision, prune in variants:
                copy = load_model(str(base), name)
                if precision is not None or prune is not None:
                    copy.compress(precision, prune)
                folder = Path(tmp) / label.replace(" ", "-").replace(",", "")
                copy.save(folder)
                loads = []
                for _ in range(3):
                    began = time.perf_counter()
                    loaded = load_model(str(folder), name)
                    loads.append(time.perf_counter() - began)
                loaded.recommend(history[asked[:1]], k=10)  # warm
                latency = []
                for user in asked:
                    began = time.perf_counter()
                    loaded.recommend(history[user:user + 1], k=10)
                    latency.append((time.perf_counter() - began) * 1000)
                ndcg = evaluate(loaded, history, encoded.test, [10])["ndcg@10"]
                print(f"| {name} | {label} | {_size(folder) / 2**20:.2f} | {min(loads):.3f} | "
                      f"{np.median(latency):.2f} | {ndcg:.4f} |", flush=True)


if __name__ == "__main__":
    main()
