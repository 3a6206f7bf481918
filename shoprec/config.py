"""Typed configuration of the pipeline (pydantic models).

The same models back the command line, the Prefect flow parameters (so the UI shows a form
with defaults and descriptions) and the library functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shoprec.data.schema import EVENTS

#: Names of the supported input layouts.
Format = Literal["generic", "online-retail", "movielens"]
SplitMethod = Literal["temporal", "random", "leave-last"]


def repo_root() -> Path:
    """Return the project's root folder (the one holding ``data/sample``)."""
    return Path(__file__).resolve().parents[1]


def bundled_sample_path() -> Path:
    """Return the path of the bundled sample: a slice of the UCI Online Retail data."""
    return repo_root() / "data" / "sample" / "online_retail_sample.csv.gz"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Model):
    """Where the data comes from and how to read it."""

    interactions: str | None = Field(
        None,
        description="Path or fsspec URL of the interactions file (CSV, CSV.gz or Parquet). "
        "Empty: the bundled Online Retail sample.",
    )
    items: str | None = Field(
        None,
        description="Path or URL of the items file. Online Retail derives items from the "
        "interactions; MovieLens finds u.item / movies.csv next to the ratings.",
    )
    format: Format | None = Field(
        None, description="Input layout; empty means detect it from the columns."
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="generic format only: canonical name -> column name in the file, "
        "e.g. {'user_id': 'customer', 'item_id': 'sku'}.",
    )
    delimiter: str | None = Field(None, description="CSV delimiter; empty means ','.")
    encoding: str = Field("utf-8", description="Text encoding of CSV files.")
    default_event: str = Field(
        "purchase", description="Event type for generic files without an 'event' column."
    )

    @field_validator("default_event")
    @classmethod
    def _known_event(cls, value: str) -> str:
        if value not in EVENTS:
            raise ValueError(f"default_event must be one of {', '.join(EVENTS)}, got {value!r}")
        return value

    def resolved_interactions(self) -> str:
        """Return the interactions path, falling back to the bundled sample."""
        return self.interactions or str(bundled_sample_path())

    def resolved_format(self) -> Format | None:
        """Return the declared format; the bundled sample is always ``online-retail``."""
        if self.format is None and self.interactions is None:
            return "online-retail"
        return self.format


class CleaningConfig(_Model):
    """Rules of cleaning and the thresholds that reject a data set."""

    max_quarantine_fraction: float = Field(
        0.5, ge=0.0, le=1.0,
        description="Reject the data when more than this share of rows is quarantined.",
    )
    min_users: int = Field(10, ge=1, description="Reject when fewer clean users remain.")
    min_items: int = Field(10, ge=1, description="Reject when fewer clean items remain.")
    max_id_length: int = Field(
        256, ge=1, description="Longer user or item ids are quarantined as 'id_too_long'."
    )


class WeightingConfig(_Model):
    """How events become implicit-feedback weights in the interaction matrix."""

    event_weights: dict[str, float] = Field(
        default_factory=lambda: {"view": 1.0, "cart": 2.0, "purchase": 4.0, "rating": 1.0},
        description="Weight of each event type (purchase > cart > view by default).",
    )
    quantity_damping: Literal["log", "sqrt", "none", "binary"] = Field(
        "log",
        description="How the quantity of shop events is damped: log2(1+q), sqrt(q), q, or 1.",
    )
    recency_half_life_days: float | None = Field(
        None, gt=0,
        description="If set, an event's weight halves for every this many days it lies "
        "before the latest event the model is trained on (recency decay); empty: no decay.",
    )

    @field_validator("event_weights")
    @classmethod
    def _weights_cover_events(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(EVENTS))
        if unknown:
            raise ValueError(f"unknown event types {unknown}; known: {', '.join(EVENTS)}")
        if any(w < 0 for w in value.values()):
            raise ValueError("event weights must be >= 0")
        return {**{e: 1.0 for e in EVENTS}, **value}


class SplitConfig(_Model):
    """How interactions are split into train, validation and test."""

    method: SplitMethod = Field("temporal", description="temporal, random or leave-last.")
    test_days: float = Field(30.0, gt=0, description="temporal: length of the test period.")
    validation_days: float = Field(
        30.0, ge=0, description="temporal: length of the validation period before the test one."
    )
    test_fraction: float = Field(0.2, ge=0, lt=1, description="random: per-user test share.")
    validation_fraction: float = Field(
        0.1, ge=0, lt=1, description="random: per-user validation share."
    )
    test_n: int = Field(1, ge=1, description="leave-last: interactions per user in test.")
    validation_n: int = Field(
        1, ge=0, description="leave-last: interactions per user in validation."
    )
    seed: int = Field(42, description="Seed of the random split.")
    repeat_items: bool = Field(
        False,
        description="Keep items a user already had in training as relevant (repeat purchase). "
        "Off by default: they are excluded from the ranking and the relevant set.",
    )
    evaluation_users: int | None = Field(
        50_000, ge=1,
        description="Score validation and test on a seeded random sample of at most this many "
        "users with a relevant item each (None: every one). Ranking the whole catalogue for "
        "every user grows with users x items; a fixed sample keeps evaluation linear in the "
        "catalogue while its metrics stay within about 0.001 of the full set's.",
    )

    @model_validator(mode="after")
    def _fractions_leave_training(self) -> SplitConfig:
        if self.test_fraction + self.validation_fraction >= 1:
            raise ValueError("test_fraction + validation_fraction must be < 1")
        return self


#: Every candidate, in leaderboard order (kept equal to ``shoprec.models.CANDIDATES`` by a
#: test; spelled out here because the models import the configuration).
DEFAULT_MODELS: tuple[str, ...] = ("popularity", "mf", "mf-ratings", "content", "ease", "vae",
                                   "dae", "cfgan")


class TrainingConfig(_Model):
    """Which candidates to train, how to judge them and where to publish the winner."""

    models: list[str] = Field(
        default_factory=lambda: list(DEFAULT_MODELS),
        description="Candidates to train (default: all), e.g. ['popularity', 'mf'].",
    )
    params: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Hyperparameters per candidate, e.g. {'mf': {'factors': 32}}.",
    )
    ks: list[int] = Field(default_factory=lambda: [10], description="Cut-offs K of the metrics.")
    primary_metric: str = Field("ndcg@10", description="Metric that selects the winner.")
    gate_margin: float = Field(
        0.05, ge=0, description="A new champion must beat popularity by this relative margin."
    )
    registered_model_name: str = Field("shoprec-recommender",
                                       description="MLflow registered model name.")
    experiment: str = Field("shoprec", description="MLflow experiment name.")
    seed: int = Field(42, description="Seed of every model.")
    max_workers: int = Field(4, ge=1, description="Candidates trained at the same time.")
    task_runner: Literal["threads", "dask"] = Field(
        "threads", description="Where candidates train: 'threads' in the flow's process, or "
        "'dask' on a Dask cluster (a local one of dask_workers processes, or dask_address).")
    dask_address: str | None = Field(
        None, description="Scheduler of an existing Dask cluster, e.g. tcp://host:8786; "
        "empty: start a local cluster for the run.")
    dask_workers: int = Field(2, ge=1, description="Worker processes of the local Dask "
                              "cluster (and the number of candidates trained at a time).")

    @field_validator("ks")
    @classmethod
    def _positive_ks(cls, value: list[int]) -> list[int]:
        if not value or any(k < 1 for k in value):
            raise ValueError("ks must be a non-empty list of positive integers")
        return sorted(set(value))

    @model_validator(mode="after")
    def _primary_is_computed(self) -> TrainingConfig:
        from shoprec.evaluation.metrics import METRICS

        name, _, k = self.primary_metric.partition("@")
        if name not in METRICS or not k.isdigit() or int(k) not in self.ks:
            raise ValueError(
                f"primary_metric {self.primary_metric!r} must be one of {', '.join(METRICS)} "
                f"at one of the computed K ({self.ks}), e.g. ndcg@{self.ks[0]}"
            )
        if "popularity" not in self.models:
            # The gate compares against popularity, so it always runs.
            self.models = ["popularity", *self.models]
        return self


class PromotionConfig(_Model):
    """Which registered version to promote to ``champion``, and how it is judged."""

    registered_model_name: str = Field("shoprec-recommender",
                                       description="MLflow registered model name.")
    version: str | None = Field(
        None, description="Version to promote; empty: the current 'challenger'.")
    ks: list[int] = Field(default_factory=lambda: [10], description="Cut-offs K of the metrics.")
    primary_metric: str = Field(
        "ndcg@10", description="Metric that decides: the candidate must be no worse than the "
        "champion on it (times 1 + margin).")
    margin: float = Field(0.0, ge=0, description="Relative margin over the champion.")
    force: bool = Field(False, description="Promote even if the comparison fails "
                        "(needs a reason).")
    reason: str = Field("", description="Why: required with force, recorded in the tags.")
    requested_by: str = Field("", description="Who asks (default: the operating-system user).")

    @field_validator("ks")
    @classmethod
    def _positive_ks(cls, value: list[int]) -> list[int]:
        return TrainingConfig._positive_ks(value)

    @model_validator(mode="after")
    def _reason_with_force(self) -> PromotionConfig:
        if self.force and not self.reason.strip():
            raise ValueError("force needs a reason: say why the comparison is overridden")
        name, _, k = self.primary_metric.partition("@")
        if not k.isdigit() or int(k) not in self.ks:
            raise ValueError(f"primary_metric {self.primary_metric!r} must be at one of the "
                             f"computed K ({self.ks})")
        return self


class BatchConfig(_Model):
    """Batch recommendations of every known user by a registered model."""

    registered_model_name: str = Field("shoprec-recommender",
                                       description="MLflow registered model name.")
    alias: str = Field("champion", description="Registry alias of the model that scores.")
    output_dir: str = Field("runs/batch", description="Root of the date-partitioned Parquet "
                            "data set (generated_date=YYYY-MM-DD/recommendations.parquet).")
    k: int = Field(10, ge=1, le=1000, description="Recommendations per user.")
    batch_size: int = Field(4096, ge=1, description="Users scored at a time (bounds memory).")
