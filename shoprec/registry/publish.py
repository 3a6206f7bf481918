"""Publishing to the MLflow registry: the gate, logging the pyfunc model, aliases.

Every new version gets the alias ``challenger``; it becomes ``champion`` only if it passes
the gate: better than popularity by the configured margin on the primary test metric, and
no worse than the current champion scored on the same test split.
"""

from __future__ import annotations

import importlib.metadata
import logging
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shoprec.config import repo_root
from shoprec.evaluation.evaluate import evaluate_ranker
from shoprec.features.encoding import EncodedSplit
from shoprec.registry import tracking

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "shoprec-recommender"
CHAMPION, CHALLENGER = "champion", "challenger"
PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")
_REQUIREMENTS = ("numpy", "scipy", "pandas", "pyarrow", "implicit", "threadpoolctl",
                 "scikit-learn", "mlflow")


@dataclass
class GateCheck:
    """One comparison of the gate."""

    name: str
    passed: bool
    candidate: float
    reference: float | None
    reason: str


@dataclass
class GateVerdict:
    """The gate's decision, with the reason of each check."""

    passed: bool
    metric: str
    checks: list[GateCheck] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)

    def describe(self) -> str:
        """One line per check, for reports and tags."""
        return "; ".join(f"{c.name}: {'pass' if c.passed else 'fail'} ({c.reason})"
                         for c in self.checks)


def gate(metric: str, candidate: dict[str, float], popularity: dict[str, float] | None,
         champion: dict[str, float] | None, margin: float) -> GateVerdict:
    """Decide whether a candidate may become champion.

    Args:
        metric: The primary metric, e.g. ``ndcg@10``.
        candidate: The candidate's test metrics.
        popularity: Popularity's test metrics on the same split (``None`` if it failed).
        champion: The current champion's metrics on the same split, ``None`` if none.
        margin: Relative margin over popularity (0.05 means 5% better).

    Returns:
        The verdict; ``passed`` only if every check passed.
    """
    value = float(candidate[metric])
    checks = []
    if popularity is None:
        checks.append(GateCheck("beats_popularity", False, value, None,
                                "popularity has no result to compare against"))
    else:
        bar = float(popularity[metric]) * (1.0 + margin)
        checks.append(GateCheck(
            "beats_popularity", value > bar, value, float(popularity[metric]),
            f"{metric} {value:.4f} vs popularity {popularity[metric]:.4f} x {1 + margin:.2f}"
            f" = {bar:.4f}"))
    if champion is None:
        checks.append(GateCheck("not_worse_than_champion", True, value, None,
                                "no champion yet"))
    else:
        reference = float(champion[metric])
        checks.append(GateCheck(
            "not_worse_than_champion", value >= reference, value, reference,
            f"{metric} {value:.4f} vs current champion {reference:.4f} on this test split"))
    return GateVerdict(all(c.passed for c in checks), metric, checks)


def load_alias(name: str, alias: str):
    """Load the pyfunc model of ``name@alias``, or ``None`` if the alias is not set."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow_client = tracking.client()
    try:
        mlflow_client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    mlflow.set_tracking_uri(tracking.tracking_uri())
    mlflow.set_registry_uri(tracking.tracking_uri())
    return mlflow.pyfunc.load_model(f"models:/{name}@{alias}")


def evaluate_pyfunc(model: Any, encoded: EncodedSplit, ks: list[int],
                    batch_size: int = 1024) -> dict[str, float]:
    """Score a registered model on this run's test split through its request interface.

    Each test user is sent as ``recent_items`` = the items of their test history (the same
    rows the candidates were scored from), so models trained on other id spaces compare
    fairly. Returned ids outside this run's item index count as misses.
    """
    history = encoded.test_history
    item_ids = encoded.items.ids

    def rank(batch: np.ndarray, k: int) -> np.ndarray:
        recent = [item_ids[history.indices[history.indptr[u]:history.indptr[u + 1]]].tolist()
                  for u in batch]
        response = model.predict(pd.DataFrame({"recent_items": recent, "k": [k] * len(batch)}))
        top = np.full((len(batch), k), -1, dtype=np.int64)
        for r, ids in enumerate(response["item_ids"]):
            found = encoded.items.encode([str(i) for i in ids])[:k]
            top[r, : len(found)] = found
        return top

    return evaluate_ranker(rank, encoded.test, ks, batch_size)


def signature_and_example(user_id: str, item_ids: list[str], query: str = ""):
    """The pyfunc signature (DESIGN.md request schema) and a small input example."""
    from mlflow.models import ModelSignature
    from mlflow.types import DataType
    from mlflow.types.schema import Array, ColSpec, Schema

    inputs = Schema([
        ColSpec(DataType.string, "user_id", required=False),
        ColSpec(Array(DataType.string), "recent_items", required=False),
        ColSpec(DataType.string, "query", required=False),
        ColSpec(DataType.long, "k", required=False),
    ])
    outputs = Schema([
        ColSpec(Array(DataType.string), "item_ids"),
        ColSpec(Array(DataType.double), "scores"),
        ColSpec(Array(DataType.string), "titles"),
        ColSpec(DataType.string, "source"),
    ])
    example = pd.DataFrame({"user_id": [user_id, "new-shopper", user_id],
                            "recent_items": [[], item_ids[:2], []],
                            "query": ["", "", query], "k": [5, 5, 5]})
    return ModelSignature(inputs=inputs, outputs=outputs), example


def git_commit() -> str:
    """The project's git commit, or ``unknown`` outside a checkout."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_root(), capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def _requirements() -> list[str]:
    found = []
    for package in _REQUIREMENTS:
        try:
            found.append(f"{package}=={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def publish(bundle_dir: str | Path, *, run_id: str, name: str, verdict: GateVerdict,
            tags: dict[str, str], example_user: str, example_items: list[str],
            example_query: str = "") -> dict[str, Any]:
    """Log the bundle as a pyfunc model in ``run_id``, register it and set its aliases.

    Args:
        bundle_dir: Folder written by :meth:`ModelBundle.save`.
        run_id: The pipeline's parent MLflow run.
        name: Registered model name.
        verdict: The gate's decision; ``champion`` is set only if it passed.
        tags: Version tags (data fingerprint, git commit, flow run id, ...).
        example_user: A known user id for the input example.
        example_items: Known item ids for the input example.
        example_query: A search text for the input example.

    Returns:
        ``{"name", "version", "aliases", "model_uri"}``.
    """
    import mlflow

    mlflow.set_tracking_uri(tracking.tracking_uri())
    mlflow.set_registry_uri(tracking.tracking_uri())
    signature, example = signature_and_example(example_user, example_items, example_query)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_FILE),
            artifacts={"bundle": str(bundle_dir)},
            code_paths=[str(repo_root() / "shoprec")],
            signature=signature,
            input_example=example,
            pip_requirements=_requirements(),
            registered_model_name=name,
        )
    version = str(info.registered_model_version)
    mlflow_client = tracking.client()
    all_tags = {**tags, "gate": "pass" if verdict.passed else "fail",
                "gate_checks": verdict.describe()}
    for key, value in all_tags.items():
        mlflow_client.set_model_version_tag(name, version, key, str(value)[:5000])
    mlflow_client.set_registered_model_alias(name, CHALLENGER, version)
    aliases = [CHALLENGER]
    if verdict.passed:
        mlflow_client.set_registered_model_alias(name, CHAMPION, version)
        aliases.append(CHAMPION)
    logger.info("registered %s version %s with aliases %s", name, version, aliases)
    return {"name": name, "version": version, "aliases": aliases, "model_uri": info.model_uri}
