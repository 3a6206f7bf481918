"""Choosing the event weighting on validation, before any candidate trains.

Whether a shop's tastes drift decides whether recency decay pays: on Online Retail a
half-life of a week lifts ``mf`` by a third on validation, on data without drift any decay
costs. So the weighting is a hyperparameter of the data and is chosen like one, by
validation ndcg@10, never by test.

Each candidate weighting is scored by a quick ``mf``: ``mf`` is the family that learns from
the weights themselves (the others fit 0/1 rows and choose for themselves whether to read
the weighted ones), and its validation figure measured how much a weighting tells about the
next purchases on every data set tried (``benchmarks/RESULTS.md``, seventeenth session).
The quick fit has fewer factors and sweeps than the candidate's, and its penalty is chosen
on the same validation rows, so every weighting is judged at its own best penalty.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from shoprec.config import WeightingConfig
from shoprec.data.splits import Split
from shoprec.features.encoding import relevance_matrix, training_matrix
from shoprec.features.idmap import IdMap
from shoprec.models import make_model
from shoprec.models.base import FitContext
from shoprec.tuning.validation import EARLY_STOPPING_USERS, ValidationTuner

logger = logging.getLogger(__name__)

#: The quick ``mf`` each weighting is scored with: half the factors and a third of the
#: sweeps of the candidate, its penalty the best of a decade grid. On Online Retail and at
#: 1M it ranked the weightings as the full ``mf`` did, at a third of its cost.
PROXY_PARAMS: dict[str, Any] = {"factors": 32, "iterations": 5, "search_iterations": None,
                                "refine_steps": 0, "seed": 0}


@dataclass
class WeightingChoice:
    """The weighting chosen on validation, and how every candidate scored.

    Attributes:
        chosen: The weighting the run uses (without its search).
        scores: Each candidate weighting with its quick ``mf``'s validation ndcg@10, in
            the order tried (the configured weighting first).
        users: Training users the choice was made on (a seeded sample).
        seconds: Wall time of the choice.
    """

    chosen: WeightingConfig
    scores: list[tuple[WeightingConfig, float]]
    users: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, for the run summary."""
        return {"chosen": self.chosen.model_dump(mode="json"),
                "chosen_description": self.chosen.describe(),
                "candidates": [{"weighting": option.describe(),
                                "validation_ndcg@10": round(score, 6)}
                               for option, score in self.scores],
                "users": self.users, "seconds": round(self.seconds, 3),
                "scored_by": "mf " + ", ".join(f"{k}={v}" for k, v in PROXY_PARAMS.items()
                                               if k != "seed")}


def choose_weighting(split: Split, weighting: WeightingConfig,
                     threads: int = 1) -> WeightingChoice:
    """Choose the weighting of ``split``'s matrices by validation ndcg@10.

    Args:
        split: The split; only its training and validation parts are read.
        weighting: The configured weighting with its ``search``; without one, it is the
            only candidate and is returned as chosen.
        threads: Threads of the quick ``mf`` fits.

    Returns:
        The choice. Ties keep the earlier candidate, so the configured weighting wins a
        tie, and a validation part with nothing to score keeps it too.
    """
    began = time.perf_counter()
    candidates = weighting.candidates()
    users = IdMap.from_values(split.train["user_id"])
    items = IdMap.from_values(split.train["item_id"])
    cap = weighting.search.users if weighting.search else len(users)
    # The same seeded users for every candidate: the choice compares weightings, not samples.
    rows = np.arange(len(users))
    if len(users) > cap:
        rows = np.sort(np.random.default_rng(split.config.seed).choice(
            len(users), size=cap, replace=False))
    first = training_matrix(split, users, items, candidates[0])
    relevance = relevance_matrix(split.validation, users, items, first,
                                 split.config.repeat_items)[rows]
    scores: list[tuple[WeightingConfig, float]] = []
    if len(candidates) > 1 and relevance.nnz:
        for option in candidates:
            train = first if option is candidates[0] else training_matrix(split, users, items,
                                                                          option)
            train = train[rows]
            tuner = ValidationTuner(train, relevance)
            model = make_model("mf", {**PROXY_PARAMS, "threads": threads})
            model.fit(train, FitContext(tuner=tuner))
            score = tuner.score(model, EARLY_STOPPING_USERS)
            scores.append((option, score))
            logger.info("weighting %s: quick mf validation ndcg@10 %.4f", option.describe(),
                        score)
    best = max(range(len(scores)), key=lambda i: (scores[i][1], -i)) if scores else 0
    chosen = scores[best][0] if scores else candidates[0]
    seconds = time.perf_counter() - began
    logger.info("weighting chosen on validation (%d users, %.1f s): %s", len(rows), seconds,
                chosen.describe())
    return WeightingChoice(chosen, scores, len(rows), seconds)
