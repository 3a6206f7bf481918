"""Ranking metrics, batched evaluation, leaderboard and selection."""

from shoprec.evaluation.evaluate import evaluate, rmse
from shoprec.evaluation.metrics import METRICS, metric_name, mlflow_name

__all__ = ["METRICS", "evaluate", "metric_name", "mlflow_name", "rmse"]
