"""Benchmark: shoprec beside published tables, on any MovieLens-format file.

    .venv/bin/python benchmarks/published.py PATH/ratings.csv     # or PATH/u.data
    .venv/bin/python benchmarks/published.py PATH/ratings.csv --models ease,mf --k 20
    .venv/bin/python benchmarks/published.py PATH/ratings.csv --tune-trials 30

The protocol of published tables of tuned baselines: a per-user random split with 20% of
each user's ratings for test; of the other 80%, 10 points of the whole are validation. Each
candidate is fitted on the 70% training part, chooses on validation (shoprec's own grids
and early stopping, or a search with ``--tune-trials``), is refit on training + validation
(the 80%) with what it chose, and is scored on test at K: precision, recall and NDCG, as
shoprec's pipeline does (every rating is an interaction weighted by its stars, under the
default weighting, fixed: the published protocol has no recency to choose; the items a
user rated in the 80% are excluded from that user's ranking and relevant set). What a family
chooses inside its fit (a regularisation, the epochs of early stopping) it chooses on
validation ndcg@10 whatever ``--k`` is; a search (``--tune-trials``) optimises ndcg@K. Nothing is
logged or registered: the core functions run directly, one candidate after another with
the machine's cores. Prints Markdown; ``--json-out`` also writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    """Parse arguments, run every candidate under the protocol, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="A MovieLens ratings file: ratings.csv (userId, movieId, "
                        "rating, timestamp) or u.data; movies.csv / u.item beside it are read "
                        "for the content model when present.")
    parser.add_argument("--items", default=None, help="The movies file, if elsewhere.")
    parser.add_argument("--k", type=int, default=20, help="Cut-off K (default 20).")
    parser.add_argument("--models", default=None, help="Candidates (default: all).")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--tune-trials", type=int, default=0,
                        help="Search trials per family before training (0: none).")
    parser.add_argument("--tune-seconds", type=float, default=None)
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()
    if not Path(args.path).exists():
        raise SystemExit(f"{args.path}: no such file (give a MovieLens ratings.csv or u.data)")

    from threadpoolctl import threadpool_limits

    from shoprec.config import DataConfig, SplitConfig, TrainingConfig
    from shoprec.features import item_frame
    from shoprec.pipeline import prepare
    from shoprec.runtime import apply_runtime_defaults
    from shoprec.training import plan_jobs, train_candidate_row
    from shoprec.tuning.search import search

    apply_runtime_defaults()
    began = time.perf_counter()
    primary = f"ndcg@{args.k}"
    models = args.models.split(",") if args.models else None
    training = TrainingConfig(**({"models": models} if models else {}), ks=[args.k],
                              primary_metric=primary, seed=args.seed,
                              tune_trials=args.tune_trials, tune_seconds=args.tune_seconds)
    prepared = prepare(DataConfig(interactions=args.path, items=args.items, format="movielens"),
                       split_config=SplitConfig(method="random",
                                                test_fraction=args.test_fraction,
                                                validation_fraction=args.validation_fraction,
                                                seed=args.seed,
                                                # Every user, as published tables score
                                                # (the pipeline samples 50,000 by default).
                                                evaluation_users=None))
    encoded = prepared.encoded
    items = item_frame(prepared.data.items, encoded.items)
    cores = os.cpu_count() or 1
    plain = plan_jobs(training, None, cores, cores)
    tuned, searches = {}, {}
    for job in plain:
        if job.candidate in training.tuned_models():
            found = search(job.candidate, job.params, encoded, items, primary,
                           training.tune_trials, training.tune_seconds, training.seed)
            tuned[job.candidate], searches[job.candidate] = found.tuned_params(), found.to_dict()
    rows = []
    for job in plan_jobs(training, None, cores, cores, tuned):
        with threadpool_limits(cores):
            rows.append(train_candidate_row(job.candidate, job.params, encoded, items,
                                            training.ks))
    seconds = time.perf_counter() - began

    split = prepared.split.summary()
    total = sum(split[part]["rows"] for part in ("train", "validation", "test"))
    users, n_items = encoded.shape
    scored, with_items = (encoded.evaluation_users.get("test") or [0, 0])[1], \
        (encoded.evaluation_users.get("test") or [0, 0])[0]
    left_out = {name.removeprefix("test_").replace("_", " "): count
                for name, count in encoded.dropped.items()
                if name in ("test_unseen_user", "test_unseen_item") and count}
    k = args.k
    print(f"data: {args.path}: {total:,} ratings; the training part's {users:,} users and "
          f"{n_items:,} items; per-user random split, test {args.test_fraction:.0%}, "
          f"validation {args.validation_fraction:.0%}, seed {args.seed}; refit on training + "
          f"validation before test; K={k}; {scored:,} of {with_items:,} test users scored; "
          f"{seconds:.1f} s")
    print(f"conventions: every rating is relevant (any star); recall@{k} = hits / the user's "
          f"test items; ndcg@{k} binary, ideal DCG over min(test items, {k}); the user's "
          "training and validation items are excluded from the ranking and relevant set"
          + ("; test rows left out (their user or item is not in the training part, which "
             "published tables may count as misses): "
             + ", ".join(f"{name} {count:,}" for name, count in left_out.items())
             if left_out else ""))
    for name, found in searches.items():
        print(f"search {name}: {found['trials']} of {args.tune_trials} trials asked "
              f"({found['complete']} complete, {found['pruned']} pruned, {found['failed']} "
              f"failed) in {found.get('seconds', 0.0):.1f} s; chose {tuned[name]}")
    print()
    rated = any("rmse" in row.test for row in rows)
    print(f"| model | status | precision@{k} | recall@{k} | ndcg@{k} ± se | val ndcg@{k} "
          + ("| rmse " if rated else "") + "| train s | refit s |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if rated else ""))
    ranked = sorted(rows, key=lambda r: -r.test.get(primary, float("-inf")))
    for row in ranked:
        cells = [f"{row.test[m]:.4f}" if m in row.test else "-"
                 for m in (f"precision@{k}", f"recall@{k}")]
        cells.append(f"{row.test[primary]:.4f} ± {row.test.get(f'ndcg_se@{k}', 0.0):.4f}"
                     if primary in row.test else "-")
        valid = f"{row.validation[primary]:.4f}" if primary in row.validation else "-"
        rmse = ([f"{row.test['rmse']:.4f}" if "rmse" in row.test else "-"] if rated else [])
        print(f"| {row.model} | {row.status} | {' | '.join(cells)} | {valid} | "
              + "".join(f"{cell} | " for cell in rmse)
              + f"{row.train_seconds:.1f} | {row.refit_seconds:.1f} |")
    for row in rows:
        if row.error:
            print(f"\n{row.model}: {row.error}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({
            "path": args.path, "k": k, "split": split, "seconds": seconds, "tuned": tuned,
            "search": searches, "evaluation_users": encoded.evaluation_users,
            "dropped": encoded.dropped, "rows": [r.to_dict() for r in rows]},
            indent=2, default=str))


if __name__ == "__main__":
    main()
