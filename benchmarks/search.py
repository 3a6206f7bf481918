"""Benchmark: product search on Online Retail with damaged queries.

    .venv/bin/python benchmarks/search.py [--n 1000] [--seed 0]

For test purchases of a temporal split (30 + 30 days), the query is the purchased product's
title with one word dropped and one letter changed; the benchmark reports recall@10 of the
exact product and its MRR@10, without and with personalisation by the shopper's history
(train + validation rows). Personalisation re-orders the page of the 10 best text matches,
so recall@10 is the same by design; MRR shows whether the shopper's taste moves the product
they bought up or down the page. The content model is fitted on the training part only.
"""

from __future__ import annotations

import argparse
import string
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RETAIL = ROOT.parent / "shared" / "data" / "online_retail.csv.gz"


def damage(title: str, rng: np.random.Generator) -> str:
    """Drop one word (if there are two or more) and change one letter of another."""
    words = title.split()
    if len(words) >= 2:
        words.pop(int(rng.integers(len(words))))
    letters = [(w, c) for w, word in enumerate(words) for c, ch in enumerate(word)
               if ch.isalpha()]
    if letters:
        w, c = letters[int(rng.integers(len(letters)))]
        choices = [x for x in string.ascii_uppercase if x != words[w][c].upper()]
        word = words[w]
        words[w] = word[:c] + str(rng.choice(choices)) + word[c + 1:]
    return " ".join(words)


def main() -> None:
    """Run the benchmark and print Markdown for RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", default=str(RETAIL))
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from shoprec.config import DataConfig, SplitConfig
    from shoprec.features import item_frame
    from shoprec.models import ContentRecommender, FitContext
    from shoprec.pipeline import prepare

    began = time.perf_counter()
    prepared = prepare(DataConfig(interactions=args.interactions),
                       split_config=SplitConfig(method="temporal", test_days=30,
                                                validation_days=30))
    encoded = prepared.encoded
    items = item_frame(prepared.data.items, encoded.items)
    model = ContentRecommender(popularity_smoothing=0.1).fit(
        encoded.train, FitContext(items=items))
    fitted = time.perf_counter() - began

    rng = np.random.default_rng(args.seed)
    rows, cols = encoded.test.nonzero()  # test purchases of known users and items
    titles = items["title"].fillna("").to_numpy()
    usable = np.flatnonzero(np.char.str_len(titles[cols].astype(str)) > 0)
    chosen = rng.choice(usable, size=min(args.n, len(usable)), replace=False)
    queries = [damage(str(titles[cols[i]]), rng) for i in chosen]
    targets = cols[chosen]
    history = encoded.test_history[rows[chosen]]

    start = time.perf_counter()
    plain, _ = model.search(queries, k=10)
    plain_s = time.perf_counter() - start
    start = time.perf_counter()
    personal, _ = model.search(queries, k=10, user_rows=history)
    personal_s = time.perf_counter() - start
    def recall_and_mrr(found: np.ndarray) -> tuple[float, float]:
        hits = found == targets[:, None]
        rank = hits.argmax(axis=1) + 1
        return float(hits.any(axis=1).mean()), float(np.where(hits.any(axis=1), 1 / rank, 0).mean())

    recall_plain, mrr_plain = recall_and_mrr(plain)
    recall_personal, mrr_personal = recall_and_mrr(personal)
    # A query whose damaged title is identical for several products cannot single one out.
    print(f"data: {args.interactions}; {len(items):,} products in the index; "
          f"{len(queries):,} test purchases; content model fitted in {fitted:.1f} s\n")
    print("| search | recall@10 of the exact product | MRR@10 | ms per query |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| text only | {recall_plain:.3f} | {mrr_plain:.3f} | "
          f"{1000 * plain_s / len(queries):.2f} |")
    print(f"| personalised | {recall_personal:.3f} | {mrr_personal:.3f} | "
          f"{1000 * personal_s / len(queries):.2f} |")
    print("\nexamples:")
    for q, t in list(zip(queries, targets, strict=True))[:5]:
        print(f"  {q!r} -> {titles[t]!r}")


if __name__ == "__main__":
    main()
