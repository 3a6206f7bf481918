"""Benchmark: what privacy costs on Online Retail (issue 18, point 2).

    .venv/bin/python benchmarks/privacy.py

* Pseudonymisation: reading and mapping the file with and without ``pseudonymize`` (the
  keyed hash of every distinct user id), best of three.
* Private popularity: test ndcg@10 of the popularity baseline (temporal 30/30, scored
  from training + validation like the pipeline's refit) with exact counts and at several
  epsilons, five runs each (the noise is drawn afresh every time; mean and range).
Prints Markdown for RESULTS.md.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RETAIL = ROOT.parent / "shared" / "data" / "online_retail.csv.gz"


def main() -> None:
    """Time pseudonymisation; score private popularity at several epsilons."""
    from shoprec.config import CleaningConfig, DataConfig, SplitConfig, WeightingConfig
    from shoprec.data.adapters import load
    from shoprec.evaluation import evaluate
    from shoprec.models import Popularity
    from shoprec.pipeline import prepare
    from shoprec.privacy import make_key, pseudonymize

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; data: {RETAIL}\n")
    config = DataConfig(interactions=str(RETAIL))
    key = make_key("benchmark-key-0123456789", "benchmark")
    plain, hidden = [], []
    for _ in range(3):
        began = time.perf_counter()
        raw = load(config)
        plain.append(time.perf_counter() - began)
        began = time.perf_counter()
        pseudonymize(raw, key)
        hidden.append(time.perf_counter() - began)
    users = raw.interactions["user_id"].nunique()
    rows = len(raw.interactions)
    print(f"| step | seconds (best of 3) |\n| --- | ---: |\n| read and map {rows:,} "
          f"rows | {min(plain):.2f} |\n| pseudonymise {users:,} distinct ids in those rows | "
          f"{min(hidden):.2f} |\n")

    prepared = prepare(config, CleaningConfig(), SplitConfig(method="temporal"),
                       WeightingConfig())
    encoded = prepared.encoded
    print("| popularity counts | test ndcg@10 (mean of 5 runs) | min | max |")
    print("| --- | ---: | ---: | ---: |")
    exact = evaluate(Popularity().fit(encoded.test_history), encoded.test_history,
                     encoded.test, [10])["ndcg@10"]
    print(f"| exact | {exact:.4f} | | |")
    for epsilon in (10.0, 1.0, 0.1, 0.01):
        found = [evaluate(Popularity(epsilon=epsilon, seed=seed).fit(encoded.test_history),
                          encoded.test_history, encoded.test, [10])["ndcg@10"]
                 for seed in range(5)]
        print(f"| epsilon {epsilon:g} (at most 50 items per shopper) | {np.mean(found):.4f} | "
              f"{min(found):.4f} | {max(found):.4f} |", flush=True)


if __name__ == "__main__":
    main()
