"""Choosing the event weighting on validation, before any candidate trains.

Whether a shop's tastes drift decides whether recency decay pays: on Online Retail a
half-life of a week lifts ``mf`` by a third on validation, on data without drift any decay
costs. So the weighting is a hyperparameter of the data and is chosen like one, by
validation ndcg@10, never by test.

Each candidate weighting is scored by a quick ``mf``: ``mf`` is the family that learns from
the weights themselves (the others fit 0/1 rows and choose for themselves how strongly to
read the weighted ones: ``HistoryWeights``), and its validation figure measured how much a
weighting tells about the next purchases on every data set tried
(``benchmarks/RESULTS.md``, seventeenth session).
The quick fit has fewer factors and sweeps than the candidate's, and its penalty is chosen
on the same validation rows, so every weighting is judged at its own best penalty.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shoprec.config import WeightingConfig
from shoprec.data.schema import is_in
from shoprec.data.splits import Split
from shoprec.errors import ModelFitError
from shoprec.features.encoding import relevance_matrix, training_matrix
from shoprec.features.idmap import IdMap
from shoprec.models import make_model
from shoprec.models.base import FitContext
from shoprec.threads import limit_threads
from shoprec.tuning.validation import SELECTION_USERS, ValidationTuner

logger = logging.getLogger(__name__)

#: The quick ``mf`` each weighting is scored with: half the factors and a third of the
#: sweeps of the candidate, its penalty the best of a decade grid. On Online Retail and at
#: 1M it ranked the weightings as the full ``mf`` did, at a third of its cost. Its penalty
#: search runs every sweep (no ``search_iterations``), so the fitted model is the chosen
#: penalty's scored state and its score is the search's (not computed a second time).
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
        threads: Cores for the choice: as many weightings are scored side by side, or
            fewer with more cores each.

    Returns:
        The choice. Another weighting replaces the configured one only when it scores
        higher by more than the search's ``margin``; a validation part with nothing to
        score, or quick fits that all fail, keep the configured one too.
    """
    began = time.perf_counter()
    candidates = weighting.candidates()
    search = weighting.search
    if search is None or len(candidates) == 1:
        return WeightingChoice(candidates[0], [], 0, time.perf_counter() - began)
    # Items and the recency reference come from the whole training part, as in the run;
    # the rows only from the sampled users, so the cost stays that of the sample.
    items = IdMap.from_values(split.train["item_id"])
    end = split.train["timestamp"].max()
    sampled = _sample_users(split, search.users)
    train = split.train[split.train["user_id"].isin(sampled)]
    users = IdMap.from_values(train["user_id"])
    first = training_matrix(train, users, items, candidates[0], end)
    relevance = relevance_matrix(split.validation[split.validation["user_id"].isin(sampled)],
                                 users, items, first, split.config.repeat_items)
    # The weightings are fitted side by side, the cores shared out among them: the fits are
    # small (ALS over the sampled users), and on 2 cores, one weighting a core, the choice
    # took 6.0 s on Online Retail where one weighting at a time on both took 7.2 s. Each
    # fit is seeded on its own: the scores do not depend on the threads.
    scored_users = int(np.count_nonzero(np.diff(relevance.indptr)))
    options = candidates if scored_users >= MIN_CHOICE_USERS else []
    if 0 < scored_users < MIN_CHOICE_USERS:
        # 17 validation shoppers chose a 7-day half-life by 0.19 to 0.11, where each
        # figure's standard error was about 0.08: noise deciding every candidate's data.
        logger.warning("weighting kept as configured (%s): only %d validation shoppers have "
                       "an item to score, fewer than the %d a choice rests on",
                       candidates[0].describe(), scored_users, MIN_CHOICE_USERS)
    workers = max(1, min(threads, len(options)))
    per_fit = max(1, threads // workers)

    def quick_score(option: WeightingConfig) -> float | None:
        """The quick ``mf``'s validation ndcg@10 under ``option`` (None: it cannot fit)."""
        rows = first if option is candidates[0] else training_matrix(train, users, items,
                                                                     option, end)
        tuner = ValidationTuner(rows, relevance, exclude_seen=not split.config.repeat_items)
        model = make_model("mf", {**PROXY_PARAMS, "threads": per_fit})
        try:
            model.fit(rows, FitContext(tuner=tuner))
        except ModelFitError as exc:
            # One weighting the quick fit cannot take must not stop the run: it is left out.
            logger.warning("weighting %s left out of the choice: %s", option.describe(), exc)
            return None
        score = tuner.selected_score
        if score is None:  # the proxy chose no penalty (a configured one): score the fit
            score = tuner.score(model, SELECTION_USERS)
        logger.info("weighting %s: quick mf validation ndcg@10 %.4f", option.describe(), score)
        return score

    # BLAS is held to one thread around the whole pool: with the wheels' OpenBLAS (its own
    # threads) the cap is the process's, so every quick fit, in whichever worker, runs
    # under it. (A BLAS built on OpenMP keeps each thread's own size: ALS's fit caps it.)
    with limit_threads(1, "blas"), ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(quick_score, options))
    scores = [(option, score) for option, score in zip(options, results, strict=True)
              if score is not None]
    chosen = _best(scores, candidates[0], search.margin)
    seconds = time.perf_counter() - began
    logger.info("weighting chosen on validation (%d users, %.1f s): %s", len(users), seconds,
                chosen.describe())
    return WeightingChoice(chosen, scores, len(users), seconds)


#: Fewest validation shoppers with an item to score on which a weighting is chosen (the
#: gate's own least number of test users).
MIN_CHOICE_USERS = 50


def _sample_users(split: Split, cap: int) -> pd.Index:
    """At most ``cap`` training users, those with validation rows first (they are scored).

    Seeded by the split's seed, so every candidate and every rerun sees the same users.
    """
    users = pd.Index(split.train["user_id"].unique())
    if len(users) <= cap:
        return users
    rng = np.random.default_rng(split.config.seed)
    validated = is_in(users, split.validation["user_id"])
    order = np.concatenate([rng.permutation(np.flatnonzero(validated)),
                            rng.permutation(np.flatnonzero(~validated))])
    return users[np.sort(order[:cap])]


def _best(scores: list[tuple[WeightingConfig, float]], configured: WeightingConfig,
          margin: float) -> WeightingConfig:
    """The best-scoring weighting, unless the configured one is within ``margin`` of it.

    A change of weighting changes every candidate's data; a difference inside the quick
    fit's noise (at 1M synthetic interactions, 0.0946 against the configured 0.0939) is
    no reason for it.
    """
    if not scores:
        return configured
    best, top = max(scores, key=lambda pair: pair[1])
    own = next((score for option, score in scores if option == configured), None)
    if own is not None and top <= own * (1 + margin):
        return configured
    return best
