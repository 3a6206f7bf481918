"""Benchmark: the latency explanations add to a real-time answer, per family.

    .venv/bin/python benchmarks/explain.py [--requests 300] [--epochs 10]

Each family is fitted on Online Retail's training part (temporal split; the networks for
``--epochs`` epochs without early stopping: the cost of an answer does not depend on how
well they learned), put in a :class:`~shoprec.registry.bundle.ModelBundle` with the
users' histories, and asked through :meth:`ModelBundle.answer` (the real-time server's
path, without the HTTP round trip, which is the same with and without ``explain``) for
the top 10 of single known users, one request at a time, with and without
``"explain": true``. Reports p50 and p95 per family, and the share of recommendations
that carry an explanation. Prints Markdown for RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from retail_parts import temporal_parts  # noqa: E402

RETAIL = ROOT.parent / "shared" / "data" / "online_retail.csv.gz"

FAMILIES = ("popularity", "ease", "mf", "content", "vae", "dae", "cfgan")


def main() -> None:
    """Fit each family, time its answers with and without explanations."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", default=str(RETAIL))
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--models", default=",".join(FAMILIES))
    args = parser.parse_args()

    from shoprec.models import Popularity
    from shoprec.registry.bundle import ModelBundle
    from shoprec.training import fit_candidate

    encoded, items = temporal_parts(args.interactions)
    history = encoded.train
    users = np.flatnonzero(np.diff(history.indptr) > 0)
    rng = np.random.default_rng(0)
    asked = rng.choice(users, size=min(args.requests, len(users)), replace=False)
    user_ids = encoded.users.ids
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; data: {args.interactions}: "
          f"{history.shape[0]:,} users, {history.shape[1]:,} items; {len(asked)} single-user "
          f"requests (k=10) per family and mode; histories: median "
          f"{int(np.median(np.diff(history.indptr)[asked]))} items\n")
    print("| family | p50 plain ms | p50 explained ms | p95 plain ms | p95 explained ms "
          "| added p50 ms | recommendations explained |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in args.models.split(","):
        params = {"seed": 42, "epochs": args.epochs} if name in ("vae", "dae", "cfgan") \
            else {}
        model, _ = fit_candidate(name, params, history, items, None)
        bundle = ModelBundle(model=model, users=encoded.users, items=encoded.items,
                             history=history, fallback=Popularity().fit(history),
                             meta={"model": name}, titles=items["title"].tolist())
        times: dict[bool, list[float]] = {False: [], True: []}
        explained = total = 0
        for explain in (False, True):
            bundle.answer([{"user_id": str(user_ids[asked[0]]), "explain": explain}])  # warm
            for user in asked:
                request = [{"user_id": str(user_ids[user]), "k": 10, "explain": explain}]
                began = time.perf_counter()
                answer = bundle.answer(request)[0]
                times[explain].append((time.perf_counter() - began) * 1000)
                if explain:
                    total += len(answer["item_ids"])
                    explained += sum(bool(r) for r in answer["explanations"])
        p = {e: np.percentile(times[e], [50, 95]) for e in times}
        print(f"| {name} | {p[False][0]:.2f} | {p[True][0]:.2f} | {p[False][1]:.2f} | "
              f"{p[True][1]:.2f} | {p[True][0] - p[False][0]:+.2f} | "
              f"{explained / max(total, 1):.0%} |", flush=True)


if __name__ == "__main__":
    main()
