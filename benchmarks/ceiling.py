"""Benchmark: how far the families can go on the synthetic data, from the planted model.

    .venv/bin/python benchmarks/ceiling.py                      # 1M, as benchmarks/scale.py
    .venv/bin/python benchmarks/ceiling.py --sizes 1000000,10000000

The generator draws every row from a known model (``shoprec.data.synthetic.planted_model``):
a user's taste segment picks a category, popularity picks the item. So the best any
recommender can score on the synthetic benchmarks is known, for the same data, split and
evaluation as ``benchmarks/scale.py`` (seed 1, temporal 30/30 split, seed 42, test
ndcg@10, items seen in the history excluded):

- *segment known*: each user's items ranked by their segment's chances (an oracle);
- *posterior*: the segment inferred from the user's history alone by Bayes' rule
  (history items taken once each), the items ranked by the expected chances. About the
  best a model that sees only the history can do, as the families do; not a strict bound
  (it ignores how often an item was repeated, and ranks by the chance of one row rather
  than of the item turning up in the test period), but the data leave little room above.

Both are printed next to popularity, so a target such as "2x popularity" can be set beside
what the data allows. Prints Markdown.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def ceiling(size: int, workdir: Path) -> dict[str, float]:
    """Test ndcg@10 of popularity, the posterior and the known segment at ``size`` rows."""
    from shoprec.config import CleaningConfig, DataConfig, SplitConfig, WeightingConfig
    from shoprec.data.synthetic import generate, planted_model
    from shoprec.evaluation.evaluate import evaluate, evaluate_ranker
    from shoprec.models import Popularity
    from shoprec.pipeline import prepare
    from shoprec.ranking import mask_seen, top_k

    users, items = size // 20, size // 200  # the shape benchmarks/scale.py uses
    generated = generate(workdir / f"syn{size}", users, items, size, seed=1)
    planted = planted_model(users, items, seed=1)
    encoded = prepare(DataConfig(interactions=generated.interactions_path,
                                 items=generated.items_path), CleaningConfig(),
                      SplitConfig(method="temporal", test_days=30, validation_days=30,
                                  seed=42), WeightingConfig()).encoded
    user_index = {u: i for i, u in enumerate(planted.user_ids)}
    item_index = {u: i for i, u in enumerate(planted.item_ids)}
    segment = planted.segments[[user_index[u] for u in encoded.users.ids]]
    # The planted chances over the encoded items (the ones seen in training).
    chances = planted.probabilities[:, [item_index[i] for i in encoded.items.ids]]
    chances = chances.astype(np.float32)
    history = encoded.test_history
    seen = (history > 0).astype(np.float32)
    log_likelihood = np.asarray(seen @ np.log(chances).T)  # users x segments
    log_likelihood -= log_likelihood.max(axis=1, keepdims=True)
    posterior = np.exp(log_likelihood)
    posterior /= posterior.sum(axis=1, keepdims=True)

    def ranker(scores_of: Callable[[np.ndarray], np.ndarray],
               ) -> Callable[[np.ndarray, int], np.ndarray]:
        def rank(batch: np.ndarray, k: int) -> np.ndarray:
            scores = scores_of(batch)
            mask_seen(scores, history[batch])
            return top_k(scores, k)[0]
        return rank

    known = evaluate_ranker(ranker(lambda b: chances[segment[b]].copy()), encoded.test)
    inferred = evaluate_ranker(ranker(lambda b: posterior[b] @ chances), encoded.test)
    popularity = evaluate(Popularity().fit(encoded.test_history), history, encoded.test)
    return {"users": known["users"], "popularity": popularity["ndcg@10"],
            "posterior": inferred["ndcg@10"], "known": known["ndcg@10"]}


def main() -> None:
    """Measure each size and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    print("| interactions | test users | popularity | posterior (history only) | "
          "segment known |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for size in (int(x) for x in args.sizes.split(",")):
            r = ceiling(size, Path(tmp))
            pop = r["popularity"]
            print(f"| {size:,} | {r['users']:,.0f} | {pop:.4f} | {r['posterior']:.4f} "
                  f"({r['posterior'] / pop:.2f}x) | {r['known']:.4f} "
                  f"({r['known'] / pop:.2f}x) |", flush=True)


if __name__ == "__main__":
    main()
