"""Benchmark: which event weighting suits a data set, judged on validation.

    .venv/bin/python benchmarks/weighting.py                      # Online Retail, temporal 30/30
    .venv/bin/python benchmarks/weighting.py --models mf,ease,content,vae \\
        --half-lives none,15,30,60,120 --interactions DIR/interactions.parquet \\
        --items DIR/items.parquet

The weighting is a choice about the data, made before any candidate trains: recency decay
pays where tastes drift and costs where they do not. This runs the core's preparation
once per weighting and trains each family through ``train_candidate_row`` (its own choices
on validation, then the refit), no Prefect or MLflow. It prints validation ndcg@10, the
figure to choose by, with test ndcg@10 beside it, as a Markdown table for RESULTS.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RETAIL = ROOT.parent / "shared" / "data" / "online_retail.csv.gz"


def weightings(half_lives: list[float | None], repeats: list[str],
               dampings: list[str]) -> list[dict]:
    """The default weighting, then every combination asked for."""
    out: list[dict] = [{}]
    for damping in dampings:
        for repeat in repeats:
            for half_life in half_lives:
                option = {"quantity_damping": damping, "repeats": repeat,
                          "recency_half_life_days": half_life}
                if option != {"quantity_damping": "log", "repeats": "sum",
                              "recency_half_life_days": None}:
                    out.append(option)
    return out


def main() -> None:
    """Prepare once per weighting, train each family, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", default=str(RETAIL))
    parser.add_argument("--items", default=None)
    parser.add_argument("--split", default="temporal")
    parser.add_argument("--test-days", type=float, default=30)
    parser.add_argument("--validation-days", type=float, default=30)
    parser.add_argument("--models", default="popularity,mf,ease,content")
    parser.add_argument("--half-lives", default="none,30,90",
                        help="Recency half-lives in days; none: no decay.")
    parser.add_argument("--repeats", default="max", help="sum and/or max.")
    parser.add_argument("--dampings", default="binary", help="log, sqrt, none, binary.")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    from shoprec.config import DataConfig, SplitConfig, WeightingConfig
    from shoprec.features import item_frame
    from shoprec.pipeline import PreparationSteps, load_and_validate
    from shoprec.runtime import apply_runtime_defaults
    from shoprec.training import train_candidate_row

    apply_runtime_defaults()
    half_lives = [None if h.strip().lower() == "none" else float(h)
                  for h in args.half_lives.split(",")]
    options = weightings(half_lives, args.repeats.split(","), args.dampings.split(","))
    models = args.models.split(",")
    steps = PreparationSteps()
    prepared = load_and_validate(DataConfig(interactions=args.interactions, items=args.items),
                                 None, None, steps)
    parts = steps.split(prepared.data, SplitConfig(
        method=args.split, test_days=args.test_days, validation_days=args.validation_days,
        seed=args.seed))
    print(f"data: {args.interactions}; split {args.split}; validation ndcg@10 (test "
          "ndcg@10), each family with its own choices on validation and refit\n")
    print("| weighting | " + " | ".join(models) + " | seconds |")
    print("| --- | " + " | ".join("---:" for _ in models) + " | ---: |")
    for option in options:
        began = time.perf_counter()
        encoded = steps.encode(parts, WeightingConfig(**option))
        items = item_frame(prepared.data.items, encoded.items)
        cells = []
        for name in models:
            row = train_candidate_row(name, {}, encoded, items, [10])
            cells.append(f"{row.validation['ndcg@10']:.4f} ({row.test['ndcg@10']:.4f})"
                         if row.status == "ok" else row.status)
        label = ", ".join(f"{k}={v}" for k, v in option.items()) or "default"
        print(f"| {label} | " + " | ".join(cells)
              + f" | {time.perf_counter() - began:.0f} |", flush=True)


if __name__ == "__main__":
    main()
