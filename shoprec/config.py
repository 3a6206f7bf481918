"""Typed configuration of the pipeline (pydantic models).

The same models back the command line, the Prefect flow parameters (so the UI shows a form
with defaults and descriptions) and the library functions.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shoprec.data.schema import EVENTS

#: The registered model every command uses unless told another name.
DEFAULT_MODEL_NAME = "shoprec-recommender"

def registry_name(value: str) -> str:
    """A registered model name as MLflow accepts one, checked before any work is done.

    MLflow refuses the others only when it registers, after the whole training.

    Raises:
        ValueError: Blank, with ``/`` or ``:``, or not a plain path segment.
    """
    if not value.strip():
        raise ValueError("a registered model name cannot be blank")
    if "/" in value or ":" in value:
        raise ValueError(f"{value!r}: MLflow refuses '/' and ':' in a registered model name")
    if posixpath.normpath(value) != value or value == "." or value.startswith(".."):
        raise ValueError(f"{value!r} is not a name MLflow accepts (no '.' or '..' forms)")
    return value


def new_registry_name(value: str) -> str:
    """A name a run may register versions under: :func:`registry_name`, without quotes.

    MLflow accepts quotes, but its search filters (``name = '...'``) then cannot name the
    model: the sweeps after a killed run or a retried registration would not run. A model
    registered so before stays usable by the commands that read or move its aliases.

    Raises:
        ValueError: As :func:`registry_name`, or a quote in the name.
    """
    value = registry_name(value)
    if "'" in value or '"' in value:
        raise ValueError(f"{value!r}: register under a name without quotes")
    return value


def experiment_name(value: str) -> str:
    """An MLflow experiment name as MLflow accepts one (not blank, 500 characters at most).

    Raises:
        ValueError: Blank or too long.
    """
    if not value.strip():
        raise ValueError("an experiment name cannot be blank")
    if len(value) > 500:
        raise ValueError(f"an experiment name has 500 characters at most, not {len(value)}")
    return value


def folder_name(value: str) -> str:
    """An output folder as given; a blank one is refused.

    A blank folder is the current one (``Path("")``): an unset variable in a form or a
    script wrote a run's data set wherever the process ran.

    Raises:
        ValueError: Blank.
    """
    if not value.strip():
        raise ValueError("is empty; give a folder ('.' for the current one)")
    return value


#: Names checked as MLflow will check them, so a form in the Prefect UI is refused at once.
RegisteredName = Annotated[str, AfterValidator(registry_name)]
NewRegisteredName = Annotated[str, AfterValidator(new_registry_name)]
ExperimentName = Annotated[str, AfterValidator(experiment_name)]
FolderName = Annotated[str, AfterValidator(folder_name)]


def positive_ks(value: list[int]) -> list[int]:
    """The cut-offs ``K``, sorted and unique; refused when empty or below 1."""
    if not value or any(k < 1 for k in value):
        raise ValueError("ks must be a non-empty list of positive integers")
    return sorted(set(value))


#: Names of the supported input layouts.
Format = Literal["generic", "online-retail", "movielens"]
SplitMethod = Literal["temporal", "random", "leave-last"]


def bundled_sample_path() -> Path:
    """Return the path of the bundled sample: a slice of the UCI Online Retail data.

    It is package data (``shoprec_sample``), found the same way in a checkout and in an
    installed wheel.
    """
    from importlib.resources import files

    return Path(str(files("shoprec_sample") / "online_retail_sample.csv.gz"))


class _Model(BaseModel):
    # No setting is infinite or NaN: --gate-margin inf or ease.regularization=1e400 (which
    # parses as inf) passed every range and failed later with advice that did not fit.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def check_block_name(value: str) -> None:
    """Refuse a Secret block name that is no block name (a key typed where it belongs).

    A key is text no block name looks like: other characters than lower-case letters,
    digits and dashes, or a long run of them without a dash (``openssl rand -hex 32``,
    the key this project's messages suggest). The value is not repeated.

    Raises:
        ConfigError: The value cannot be a block's name.
    """
    from shoprec.errors import ConfigError

    if not re.fullmatch(r"[a-z0-9-]+", value) or re.fullmatch(r"[0-9a-f]{32,}", value) \
            or (len(value) >= 32 and "-" not in value):
        raise ConfigError("pseudonym_secret (--pseudonym-secret) names a Prefect Secret block "
                          "(lower-case letters, digits and dashes), not the key itself: save "
                          "the key in a Secret block and give the block's name (a flow run "
                          "started with the key keeps it in its parameters: delete that run)")


class DataConfig(_Model):
    """Where the data comes from and how to read it."""

    # A refused value is not repeated in the error: a key typed in the wrong field (the
    # Secret block's name) would reach the flow run's state message and logs.
    model_config = ConfigDict(hide_input_in_errors=True)

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
        "e.g. {'user_id': 'customer', 'item_id': 'sku'}; a name prefixed 'items.' is the "
        "items file's alone, e.g. {'items.item_id': 'product_code'}.",
    )
    delimiter: str | None = Field(None, description="CSV delimiter; empty means ','.")
    encoding: str = Field("utf-8", description="Text encoding of CSV files.")
    items_delimiter: str | None = Field(
        None, description="The items file's CSV delimiter, when it differs from the "
        "interactions file's; empty: the same as theirs.")
    items_encoding: str | None = Field(
        None, description="The items file's text encoding, when it differs from the "
        "interactions file's; empty: the same as theirs.")
    decimal: Literal[".", ","] | None = Field(
        None, description="The decimal mark of numbers written as text (values, prices): ',' "
        "for '1,50' and '1.234,50'; empty: '.'.")
    default_event: str = Field(
        "purchase", description="Event type for generic files without an 'event' column."
    )
    timestamp_format: str | None = Field(
        None, description="strptime format of text timestamps, e.g. '%d/%m/%Y %H:%M' "
        "(needed for dates like 04/03/2024, whose day and month order is never guessed); "
        "empty: ISO 8601 or another unambiguous form.")
    timestamp_unit: Literal["s", "ms", "us"] | None = Field(
        None, description="Unit of numeric (epoch) timestamps; empty: seconds.")
    pseudonymize: bool = Field(
        False, description="Replace user ids at ingestion with keyed pseudonyms (HMAC-SHA256);"
        " the key comes from SHOPREC_PSEUDONYM_KEY or the Prefect Secret block "
        "pseudonym_secret, and is never logged.")
    pseudonym_secret: str | None = Field(
        None, description="Name of a Prefect Secret block holding the pseudonymisation key "
        "(flows only; implies pseudonymize; default: the SHOPREC_PSEUDONYM_KEY environment "
        "variable). The block's name, never the key itself.")

    @model_validator(mode="before")
    @classmethod
    def _secret_implies_pseudonyms(cls, data: Any) -> Any:
        # A block named without the switch trained on raw ids, as the CLI's
        # --pseudonym-secret never did: naming the key's block asks for pseudonyms.
        secret = data.get("pseudonym_secret") if isinstance(data, dict) else None
        if isinstance(secret, str) and secret.strip():
            data = {**data, "pseudonymize": True}
        return data

    @field_validator("pseudonym_secret")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        # The name itself is checked where the block is read (check_block_name): refused
        # here, Prefect's parameter validation would log the value, often the key itself.
        return None if value is None or not value.strip() else value

    @field_validator("encoding", "items_encoding")
    @classmethod
    def _known_encoding(cls, value: str | None) -> str | None:
        import codecs

        if value is None:
            return None
        try:
            found = codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r}; use one Python knows, e.g. "
                             "utf-8, latin-1, cp1252, utf-16") from None
        if not getattr(found, "_is_text_encoding", True):  # base64, rot13, zlib...
            raise ValueError(f"{value!r} is a codec, not a text encoding; use one such as "
                             "utf-8, latin-1, cp1252, utf-16")
        return value

    @field_validator("delimiter", "items_delimiter")
    @classmethod
    def _one_character(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        # A shell passes "\t" as two characters; it means the tab everyone intends.
        value = {"\\t": "\t", "tab": "\t"}.get(value, value)
        if len(value) != 1:
            raise ValueError(f"the delimiter must be one character (e.g. ';' or '\\t' for a "
                             f"tab), got {value!r}")
        if value in "\r\n\"":
            raise ValueError(f"{value!r} ends lines or quotes fields, so it cannot separate "
                             "them; give the character between the fields, e.g. ',' or ';'")
        return value

    @field_validator("timestamp_format")
    @classmethod
    def _readable_format(cls, value: str | None) -> str | None:
        from datetime import datetime

        if not value:
            return None
        # A bad directive (%Q) or a stray % is only found by parsing with it: done here on
        # a date written with it, so the mistake is the user's (exit 2), not a crash later.
        try:
            datetime.strptime(datetime(2024, 3, 4, 13, 5, 6).strftime(value), value)
        except ValueError as exc:
            if "directive" in str(exc) or "stray %" in str(exc):
                raise ValueError(f"timestamp_format {value!r} is not a strptime format "
                                 f"({exc}); e.g. '%d/%m/%Y %H:%M'") from None
        return value

    @field_validator("default_event")
    @classmethod
    def _known_event(cls, value: str) -> str:
        if value not in EVENTS:
            raise ValueError(f"default_event must be one of {', '.join(EVENTS)}, got {value!r}")
        return value

    def items_file_encoding(self) -> str:
        """The items file's text encoding: its own, else the interactions file's."""
        return self.items_encoding or self.encoding

    def items_columns(self) -> dict[str, str]:
        """The column mapping of the items file: ``items.``-prefixed entries over the plain."""
        own = {k.removeprefix("items."): v for k, v in self.columns.items()
               if k.startswith("items.")}
        return {**{k: v for k, v in self.columns.items() if not k.startswith("items.")}, **own}

    def interactions_columns(self) -> dict[str, str]:
        """The column mapping of the interactions file (the plain entries)."""
        return {k: v for k, v in self.columns.items() if not k.startswith("items.")}

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
    max_value: float = Field(
        1e6, gt=0, allow_inf_nan=False,
        description="Values (quantities, ratings) of larger magnitude are quarantined as "
        "'value_out_of_range' (a typo or an overflow, not a purchase).",
    )


class WeightingSearch(_Model):
    """Choosing the event weighting on validation, before any candidate trains.

    The candidates are the configured weighting and, with ``quantity_damping`` binary and
    ``repeats`` max, no recency decay and each of ``half_lives``. Each is scored by a quick
    ``mf`` fit on the training part of the sampled users (``mf`` is the family that learns
    from the weights themselves), by validation ndcg@10; the best is used by the whole run.
    """

    half_lives: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(
        default_factory=lambda: [7.0, 30.0, 120.0],
        description="Recency half-lives in days tried (binary damping, repeats max).",
    )
    users: int = Field(
        10_000, ge=100,
        description="The choice is made on a seeded sample of at most this many training "
        "users, those with validation rows first: its cost grows with the catalogue, not "
        "with the shoppers.",
    )
    margin: float = Field(
        0.02, ge=0, le=1,
        description="Another weighting replaces the configured one only when its "
        "validation ndcg@10 is higher by more than this share (differences inside the "
        "quick fit's noise change nothing).",
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
    repeats: Literal["sum", "max"] = Field(
        "sum",
        description="How a shopper's repeated events on one item combine: 'sum' adds "
        "their weights; 'max' keeps the largest (with recency decay, about the latest).",
    )
    search: WeightingSearch | None = Field(
        None,
        description="Choose the weighting on validation first: the fields above are one "
        "candidate, binary damping with repeats max at each half-life the others (the "
        "training flow's default). Empty: the fields above, as they are.",
    )

    def fixed(self) -> WeightingConfig:
        """This weighting without its search: what the matrices are built with."""
        return self.model_copy(update={"search": None})

    def candidates(self) -> list[WeightingConfig]:
        """The weightings the search compares.

        Returns:
            This one (without its search) first, then binary damping with repeats max at
            no decay and at each of the search's half-lives, each weighting once; without
            a search, this one alone.
        """
        found = [self.fixed()]
        if self.search is None:
            return found
        for half_life in [None, *self.search.half_lives]:
            option = self.model_copy(update={
                "search": None, "quantity_damping": "binary", "repeats": "max",
                "recency_half_life_days": half_life})
            if option not in found:
                found.append(option)
        return found

    def keeps_ratings(self) -> bool:
        """Whether a rating's weight is its value (no recency decay, rating weight 1).

        ``mf-ratings`` fits the matrix's values as stars: decayed (3.1 RMSE on random
        stars, 2.2 without), they were no ratings.
        """
        return not self.recency_half_life_days and \
            float(self.event_weights.get("rating", 1.0)) == 1.0

    def describe(self) -> str:
        """A short description, e.g. ``binary, max, half-life 7 days``."""
        decay = (f"half-life {self.recency_half_life_days:g} days"
                 if self.recency_half_life_days else "no decay")
        return f"{self.quantity_damping}, {self.repeats}, {decay}"

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
    test_days: float = Field(30.0, gt=0, le=36_500, allow_inf_nan=False,
                             description="temporal: length of the test period.")
    validation_days: float = Field(
        30.0, ge=0, le=36_500, allow_inf_nan=False,
        description="temporal: length of the validation period before the test one."
    )
    test_fraction: float = Field(0.2, ge=0, lt=1, description="random: per-user test share.")
    validation_fraction: float = Field(
        0.1, ge=0, lt=1, description="random: per-user validation share."
    )
    test_n: int = Field(1, ge=1, description="leave-last: interactions per user in test.")
    validation_n: int = Field(
        1, ge=0, description="leave-last: interactions per user in validation."
    )
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Seed of the random split.")
    repeat_items: bool = Field(
        False,
        description="Keep items a user already had in training as relevant (repeat purchase: "
        "a grocery's weekly reorders). The 'again' candidate trains only then, and the "
        "published version's served and batch lists keep the shopper's own items. Off by "
        "default: they are excluded from the ranking and the relevant set.",
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


#: Every candidate, in leaderboard order (``shoprec.models.CANDIDATES`` holds these and the
#: blend, which is built from them; a test keeps the two in step; spelled out here because
#: the models import the configuration).
DEFAULT_MODELS: tuple[str, ...] = ("popularity", "mf", "mf-ratings", "content", "ease", "vae",
                                   "dae", "cfgan", "again")

# Per-candidate hyperparameters: declared types and ranges, so a value outside them is
# refused before any data is read (and the Prefect UI shows each family's form). The
# defaults are the model classes' ``__init__`` defaults (a test keeps them equal). The seed
# and thread counts are not here: they come from the run (``TrainingConfig.seed``, the
# cores shared out between candidates).

Grid = Annotated[tuple[Annotated[float, Field(gt=0)], ...], Field(min_length=1, max_length=50)]
Widths = Annotated[tuple[Annotated[int, Field(ge=1, le=65_536)], ...],
                   Field(min_length=1, max_length=8)]


class PopularityParams(_Model):
    """Hyperparameters of ``popularity``."""

    weighted: bool = Field(False, description="Rank by summed interaction weights instead of "
                           "the number of shoppers.")
    epsilon: float | None = Field(
        None, gt=0, description="Differential privacy of the counts (Laplace mechanism); "
        "empty: exact counts. --popularity-epsilon sets it for the fallback too.")
    max_items_per_user: int = Field(50, ge=1, le=100_000, description="A shopper's largest "
                                    "contribution to the counts under epsilon.")


class ALSParams(_Model):
    """Hyperparameters of ``mf`` (implicit-feedback ALS)."""

    factors: int = Field(64, ge=1, le=4096, description="Latent dimensions.")
    regularization: float | None = Field(
        None, gt=0, description="L2 penalty; empty: the best of regularization_grid on "
        "validation.")
    regularization_grid: Grid = Field((1.0, 10.0, 100.0, 1000.0),
                                      description="Penalties tried on validation.")
    alpha: float = Field(1.0, gt=0, le=1e6, description="Scale from weight to confidence.")
    iterations: int = Field(15, ge=1, le=1000, description="ALS sweeps.")
    search_iterations: int | None = Field(
        5, ge=1, le=1000, description="ALS sweeps of each fit made while choosing the "
        "penalty (the chosen one is fitted with iterations); empty: iterations.")
    refine_steps: int = Field(2, ge=0, le=10, description="Log-scale refinements of the "
                              "penalty after the grid, each halving the step.")
    weighting: Literal["bm25", "none"] = Field(
        "bm25", description="bm25: each entry reweighted by BM25 before the confidence "
        "scaling (popular items and long histories weigh less); none: entries as they are.")
    bm25_k1: float = Field(3.0, gt=0, le=1e6, description="BM25's saturation of an entry.")
    bm25_b: float = Field(0.8, ge=0, le=1, description="BM25's length normalisation.")


class RatingsMFParams(_Model):
    """Hyperparameters of ``mf-ratings`` (explicit-rating matrix factorisation)."""

    factors: int = Field(16, ge=1, le=4096, description="Latent dimensions.")
    regularization: float = Field(5.0, ge=0, le=1e6, description="L2 penalty.")
    iterations: int = Field(10, ge=1, le=1000, description="ALS sweeps.")


class ContentParams(_Model):
    """Hyperparameters of ``content`` (TF-IDF profiles and search)."""

    popularity_smoothing: float | None = Field(
        None, ge=0, description="Weight of similarity against popularity; empty: the best of "
        "smoothing_grid on validation.")
    smoothing_grid: Grid = Field((0.01, 0.1, 1.0, 10.0),
                                 description="Smoothings tried on validation.")
    word_weight: float = Field(1.0, ge=0, le=100, description="Word TF-IDF block weight.")
    char_weight: float = Field(0.5, ge=0, le=100, description="Character n-gram block weight.")
    category_weight: float = Field(0.5, ge=0, le=100, description="Category block weight.")
    brand_weight: float = Field(0.3, ge=0, le=100, description="Brand block weight.")
    price_weight: float = Field(0.2, ge=0, le=100, description="Price-bucket block weight.")
    personalisation_weight: float = Field(
        0.3, ge=0, le=100, description="Search: weight of the shopper's profile.")
    embedding_dims: int = Field(256, ge=1, le=4096,
                                description="Embedding size above 20,000 items.")
    similarity_exponent: float | None = Field(
        None, ge=0.1, le=20, description="Power of each item-item cosine in the score (1: the "
        "cosine to the shopper's profile); empty: the best of exponent_grid on validation.")
    exponent_grid: Grid = Field((1.0, 2.0, 3.0), description="Exponents tried on validation.")


#: ``history_weights`` of the families trained on 0/1 rows (shoprec.models.base's
#: ``READING_EXPONENTS`` and ``READING_MARGIN``; not imported: no models at config time).
READING_POWER = ("the power a shopper's row is read at: its weights (recency decay, event "
                 "type), each row divided by its largest, raised to it (0: as 0/1; 1: the "
                 "weights as they are; 0.5: under recency decay with binary damping and "
                 "repeats max, as if with twice the half-life); empty: the best of 0, 0.25, "
                 "0.5 and 1 on validation (a power only when it beats 0/1 by more than 1%).")

#: ``learning_rate_half_life`` of vae and dae.
RATE_HALF_LIFE = ("Steps over which the learning rate halves (null: constant); no epoch "
                  "starts once it is under 1% of the first.")

#: ``average_half_life`` of vae and dae (dae's default 50 steps, vae's off; a longer
#: average trains more epochs: benchmarks/RESULTS.md, twenty-ninth and thirtieth sessions).
AVERAGE_HALF_LIFE = ("Score and keep an exponential moving average of the weights over the "
                     "training steps, a step counting half as much as the one this many "
                     "steps later (Polyak averaging); null: the last step's weights.")


class EASEParams(_Model):
    """Hyperparameters of ``ease``."""

    regularization: float | None = Field(
        None, gt=0, description="L2 penalty; empty: the best of regularization_grid on "
        "validation.")
    regularization_grid: Grid = Field((50.0, 200.0, 800.0, 3200.0),
                                      description="Penalties tried on validation.")
    binary: bool = Field(True, description="Learn from 0/1 rows instead of weights.")
    vocabulary: int | None = Field(
        None, ge=2, le=200_000, description="Model at most this many items, the most "
        "interacted (the others rank after them by popularity); empty: as many as this "
        "machine's memory and cores allow (12,000 with the grid on 2 cores and 24 GB).")
    history_weights: float | None = Field(None, ge=0, le=4,
                                          description="With binary: " + READING_POWER)


class _NeuralParams(_Model):
    epochs: int = Field(50, ge=1, le=10_000, description="Maximum epochs (early stopping "
                        "on validation keeps the best).")
    batch_size: int = Field(256, ge=1, le=65_536, description="Shoppers per batch.")
    learning_rate: float = Field(1e-3, gt=0, le=10, description="Adam learning rate.")
    weight_decay: float = Field(0.0, ge=0, le=1e4, description="L2 penalty on the weights.")
    patience: int = Field(5, ge=1, le=10_000,
                          description="Epochs without validation improvement before stopping.")
    train_users: int | None = Field(
        20_000, ge=1, description="Train on a seeded sample of at most this many shoppers; "
        "empty: all.")
    vocabulary: int | None = Field(
        10_000, ge=1, description="Read and score the most-interacted items only; "
        "empty: all.")
    history_weights: float | None = Field(None, ge=0, le=4,
                                          description=READING_POWER[0].upper() + READING_POWER[1:])


class AutoencoderParams(_NeuralParams):
    """Hyperparameters of ``dae`` (rate 0.002, a 50-step average), the base of ``vae``'s.

    dae's defaults, against the constant 0.001 without an average (benchmarks/RESULTS.md, thirtieth
    session), on validation: higher on Online Retail (mean of four seeds 0.0892 -> 0.0920)
    and at 10M synthetic interactions (0.0854 -> 0.0860), level at 1M and on a wide
    catalogue (-0.2%, -0.1%). 0.003 tied it but for a loss at 10M; a 30-step average lost
    at 1M and on the wide catalogue. Longer averages (100, 200 steps) score higher at 1M
    and on the wide catalogue but train more epochs: opt-in (``average_half_life``).
    """

    hidden: int = Field(600, ge=1, le=65_536, description="Hidden layer width.")
    latent: int = Field(200, ge=1, le=65_536, description="Code width.")
    dropout: float = Field(0.5, ge=0, lt=1, description="Input dropout rate.")
    beta_cap: float = Field(0.2, ge=0, le=100, description="vae: largest KL weight.")
    anneal_steps: int = Field(2000, ge=0, description="vae: batches to reach beta_cap.")
    learning_rate: float = Field(2e-3, gt=0, le=10, description="Adam learning rate.")
    learning_rate_half_life: int | None = Field(
        None, ge=1, le=10_000_000, description=RATE_HALF_LIFE)
    average_half_life: int | None = Field(
        50, ge=1, le=10_000_000, description=AVERAGE_HALF_LIFE)


class VAEParams(AutoencoderParams):
    """Hyperparameters of ``vae``: a rate from 0.003 that halves every 100 steps, no average.

    Against the constant 0.001 (benchmarks/RESULTS.md, eleventh and nineteenth sessions):
    higher on validation on Online Retail under its chosen weighting and at 1M synthetic
    interactions, and on test there, at 10M and on the bundled sample, in fewer seconds.
    ``dae``'s rate stays constant: with this schedule it lost on validation at 1M and on
    a wide synthetic catalogue.
    """

    learning_rate: float = Field(3e-3, gt=0, le=10, description="Adam learning rate (the "
                                 "first step's, with a half-life).")
    learning_rate_half_life: int | None = Field(
        100, ge=1, le=10_000_000, description=RATE_HALF_LIFE)
    average_half_life: int | None = Field(
        None, ge=1, le=10_000_000, description=AVERAGE_HALF_LIFE)


class CFGANParams(_NeuralParams):
    """Hyperparameters of ``cfgan``."""

    # Defaults: the search stage's best trial on Online Retail, then checked against the
    # earlier ones (128, 0.5, 0.5, 0.1, lr 0.001) on validation over three seeds there and
    # at 1M and 10M synthetic interactions (benchmarks/RESULTS.md, "CFGAN's defaults").
    # The half-life: the best on validation of 270, 400 and 540 steps over Online Retail,
    # 1M synthetic and the wide catalogue taken together (RESULTS.md, tenth session). The
    # patience stays 5: 3 stopped cfgan at popularity's level on the bundled sample, whose
    # short epochs barely decay the rate.
    generator_hidden: Widths = Field((256,), description="Generator hidden layer widths.")
    discriminator_hidden: Widths = Field((64,), description="Discriminator hidden widths.")
    zr_ratio: float = Field(0.8, ge=0, le=1, description="Share of negatives pulled to 0.")
    pm_ratio: float = Field(0.11, ge=0, le=1, description="Share of negatives left unmasked.")
    zr_coefficient: float = Field(0.011, ge=0, le=1e4, description="Weight of the ZR term.")
    learning_rate: float = Field(2.6e-3, gt=0, le=10, description="Adam learning rate.")
    learning_rate_half_life: int | None = Field(
        400, ge=1, le=10_000_000, description="Steps over which the learning rate halves "
        "(null: constant).")
    epochs: int = Field(60, ge=1, le=10_000, description="Maximum epochs (early stopping "
                        "on validation keeps the best; none starts once the decaying "
                        "learning rate is under 1% of the first).")
    batch_size: int = Field(64, ge=1, le=65_536, description="Shoppers per step.")
    patience: int = Field(5, ge=1, le=10_000,
                          description="Epochs without validation improvement before stopping.")
    collapse_tolerance: float = Field(1e-3, ge=0, le=1, description="Smallest acceptable "
                                      "dependence of the outputs on the shopper.")


class AgainParams(_Model):
    """Hyperparameters of ``again`` (a shopper's own purchases first): none."""


class CandidateParams(BaseModel):
    """Hyperparameters of every candidate; each defaults to its family's defaults."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_by_name=True,
                              validate_by_alias=True, serialize_by_alias=True)

    popularity: PopularityParams = Field(default_factory=PopularityParams)
    mf: ALSParams = Field(default_factory=ALSParams)
    mf_ratings: RatingsMFParams = Field(default_factory=RatingsMFParams, alias="mf-ratings")
    content: ContentParams = Field(default_factory=ContentParams)
    ease: EASEParams = Field(default_factory=EASEParams)
    vae: VAEParams = Field(default_factory=VAEParams)
    dae: AutoencoderParams = Field(default_factory=AutoencoderParams)
    cfgan: CFGANParams = Field(default_factory=CFGANParams)
    again: AgainParams = Field(default_factory=AgainParams)

    def of(self, candidate: str) -> dict[str, Any]:
        """The keyword arguments of ``candidate``'s model class.

        Raises:
            KeyError: Unknown candidate.
        """
        for name, info in type(self).model_fields.items():
            if candidate in (name, info.alias):
                return getattr(self, name).model_dump(mode="python")
        raise KeyError(candidate)

    @classmethod
    def schema_of(cls, candidate: str) -> type[BaseModel]:
        """The pydantic model of ``candidate``'s hyperparameters.

        Raises:
            KeyError: Unknown candidate.
        """
        for name, info in cls.model_fields.items():
            if candidate in (name, info.alias):
                return info.annotation  # type: ignore[return-value]
        raise KeyError(candidate)


def allowed_range(model: type[BaseModel], field: str) -> str:
    """A field's type and bounds in words, e.g. ``an integer >= 1 and <= 4096``."""
    info = model.model_fields[field]
    if get_origin(info.annotation) is Literal:
        return "one of " + ", ".join(str(choice) for choice in get_args(info.annotation))
    bounds = [f"{word} {getattr(item, attr)}" for item in info.metadata
              for attr, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
              if getattr(item, attr, None) is not None]
    kinds = [a for a in (get_args(info.annotation) or (info.annotation,)) if a is not type(None)]
    names = {int: "an integer", float: "a number", bool: "true or false"}
    kind = names.get(kinds[0], "a list of values") if kinds else "a value"
    text = f"{kind} {' and '.join(bounds)}".strip()
    return text + (" (or null)" if type(None) in get_args(info.annotation) else "")


class TrainingConfig(_Model):
    """Which candidates to train, how to judge them and where to publish the winner."""

    models: list[str] = Field(
        default_factory=lambda: list(DEFAULT_MODELS),
        description="Candidates to train (default: all), e.g. ['popularity', 'mf'].",
        validate_default=True,  # a family added without its declarations fails here too
    )
    params: CandidateParams = Field(
        default_factory=CandidateParams,
        description="Hyperparameters per candidate, e.g. {'mf': {'factors': 32}}; each is "
        "checked against its declared range before any data is read.",
    )
    ks: list[int] = Field(default_factory=lambda: [10], description="Cut-offs K of the metrics.")
    primary_metric: str = Field("ndcg@10", description="Metric that selects the winner.")
    gate_margin: float = Field(
        0.05, ge=0, description="A new champion must beat popularity by this relative margin."
    )
    gate_min_users: int = Field(
        50, ge=0, description="Test users a comparison must rest on to replace a champion "
        "(0: any number); with fewer the version stays challenger.")
    registered_model_name: NewRegisteredName = Field(DEFAULT_MODEL_NAME,
                                                  description="MLflow registered model name.")
    experiment: ExperimentName = Field("shoprec", description="MLflow experiment name.")
    seed: int = Field(42, ge=0, le=2**31 - 1, description="Seed of every model.")
    # Bounded: a form's 1000 started as many processes or threads, each with a model.
    max_workers: int = Field(4, ge=1, le=64,
                             description="Candidates trained at the same time.")
    network_slots: int | None = Field(
        None, ge=1, description="Networks (vae, dae, cfgan) trained at the same time in the "
        "flow's process; the other candidates train beside them. TensorFlow's thread pools "
        "are the process's, so networks side by side split them; on 2 cores all at once "
        "kept both cores busier than one at a time (Online Retail: 122 s against 130 s, "
        "the same figures and memory peak; benchmarks/RESULTS.md). A limit bounds the "
        "networks' memory on a machine short of it. Empty: no limit. Dask workers are "
        "processes of their own and are not limited.")
    task_runner: Literal["threads", "dask"] = Field(
        "threads", description="Where candidates train: 'threads' in the flow's process, or "
        "'dask' on a Dask cluster (a local one of dask_workers processes, or dask_address).")
    dask_address: str | None = Field(
        None, description="Scheduler of an existing Dask cluster, e.g. tcp://host:8786; "
        "empty: start a local cluster for the run.")
    dask_workers: int = Field(2, ge=1, le=64, description="Worker processes of the local Dask "
                              "cluster (and the number of candidates trained at a time).")
    quantize: Literal["float16", "int8"] | None = Field(
        None, description="Store the published model's large arrays at this precision "
        "(float16, or int8 with a scale per row), read back as float32: a smaller artifact "
        "that answers in the same form. Empty: as trained.")
    prune_top: int | None = Field(
        None, ge=1, description="Prune a published ease model's item-item weights to the "
        "largest N in magnitude per item (sparse). Empty: keep them all.")
    popularity_epsilon: float | None = Field(
        None, gt=0, description="Differential privacy of the popularity counts (the "
        "popularity candidate and the published model's fallback for new shoppers): the "
        "epsilon of the Laplace mechanism, recorded with the run. Empty: exact counts.")
    blend: int = Field(
        0, ge=0, le=4, description="After the candidates, also train 'blend': a weighted "
        "sum of the standardised scores of the best N of them on validation (weights chosen "
        "on validation), scored and published like any candidate. 0: no blend.")
    tune_trials: int = Field(
        0, ge=0, le=10_000, description="Hyperparameter search before training: most trials "
        "per family (Optuna, on validation only; the configured values are the first "
        "trial). 0: no search, the families choose within their own grids. Off by default: "
        "the default run already fills its time budget (benchmarks/RESULTS.md).")
    tune_seconds: float | None = Field(
        None, gt=0, description="Wall-time budget of each family's search in seconds; no "
        "trial starts after it (the trial count then depends on the machine). Empty: trials "
        "only.")
    tune_parallel: int = Field(2, ge=1, le=64, description="Trials of a search run at a "
                               "time, as tasks of the tuning flow.")
    tune_models: list[str] | None = Field(
        None, description="Families to search (default: every candidate with a declared "
        "space, shoprec/tuning/search.py).")
    tune_seed: int | None = Field(
        None, ge=0, le=2**32 - 1, description="Seed of the search's sampler alone (empty: "
        "the run's seed): another seed tries other values while the split, the models and "
        "so the figures stay comparable with other days'.")

    @field_validator("ks")
    @classmethod
    def _positive_ks(cls, value: list[int]) -> list[int]:
        return positive_ks(value)

    @field_validator("dask_address")
    @classmethod
    def _scheduler_address(cls, value: str | None) -> str | None:
        # Read as Dask will read it, so a typing slip fails here, not deep in distributed
        # after the data was prepared (imported only when an address is given).
        if not value or not value.strip():
            return None
        from distributed.comm.addressing import parse_address, parse_host_port
        from distributed.comm.registry import get_backend

        try:
            scheme, location = parse_address(value.strip())
            get_backend(scheme)
            if scheme in ("tcp", "tls"):
                parse_host_port(location)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{value!r} is not a Dask scheduler address ({exc}); write it "
                             "as tcp://host:8786") from None
        return value.strip()

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: list[str]) -> list[str]:
        chosen = [name.strip() for name in value if name.strip()]
        if not chosen:
            raise ValueError(f"names no model; choose from {', '.join(DEFAULT_MODELS)}")
        unknown = [name for name in chosen if name not in DEFAULT_MODELS]
        if unknown:
            raise ValueError(f"unknown model(s) {', '.join(unknown)}; choose from "
                             f"{', '.join(DEFAULT_MODELS)}")
        # A family being added whose hyperparameters are not declared failed 20 s into the
        # run with "internal error: KeyError": the step left out is named now.
        declared = {key for name, info in CandidateParams.model_fields.items()
                    for key in (name, info.alias) if key}
        undeclared = [name for name in chosen if name not in declared]
        if undeclared:
            raise ValueError(f"{', '.join(undeclared)} has no hyperparameters declared: add a "
                             "field to CandidateParams (shoprec/config.py), see README "
                             "\"Adding a model family\"")
        return chosen

    @field_validator("blend")
    @classmethod
    def _blend_of_two(cls, value: int) -> int:
        if value == 1:
            raise ValueError("a blend needs at least 2 candidates; give 2 to 4, or 0 for none")
        return value

    @model_validator(mode="after")
    def _private_counts_are_unweighted(self) -> TrainingConfig:
        if self.popularity_epsilon is not None and self.params.of("popularity").get("weighted"):
            raise ValueError("--popularity-epsilon makes the shopper counts private; weighted "
                             "popularity (summed event weights) cannot be: drop "
                             "popularity.weighted")
        return self

    @model_validator(mode="after")
    def _search_asked_for(self) -> TrainingConfig:
        if self.tune_models is not None and self.tune_trials == 0:
            raise ValueError("tune_models names families to search, but tune_trials is 0; "
                             "give --tune-trials N")
        # Searching a family the run does not train did nothing, and exited 0.
        untrained = [m for m in self.tune_models or [] if m not in self.models]
        if untrained:
            raise ValueError(f"tune_models names {', '.join(untrained)}, which this run does "
                             "not train: add it to --models (the models field)")
        return self

    @field_validator("tune_models")
    @classmethod
    def _tunable_models(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        from shoprec.tuning.search import SPACES

        chosen = [name.strip() for name in value if name.strip()]
        wrong = [name for name in chosen if name not in SPACES]
        if wrong:
            raise ValueError(f"no search space for {', '.join(wrong)}; families with one: "
                             f"{', '.join(SPACES)} (a family's is declared in SPACES, "
                             "shoprec/tuning/search.py)")
        return chosen

    def tuned_models(self) -> list[str]:
        """The candidates a search runs for (none when ``tune_trials`` is 0)."""
        from shoprec.tuning.search import SPACES

        if self.tune_trials == 0:
            return []
        wanted = self.tune_models if self.tune_models is not None else list(SPACES)
        return [name for name in self.models if name in wanted and name in SPACES]

    @property
    def search_seed(self) -> int:
        """The seed of the search's sampler: ``tune_seed``, else the run's ``seed``."""
        return self.seed if self.tune_seed is None else self.tune_seed

    @property
    def primary_k(self) -> int:
        """The K of the primary metric (``ndcg@20``: 20)."""
        return int(self.primary_metric.partition("@")[2])

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

    registered_model_name: RegisteredName = Field(DEFAULT_MODEL_NAME,
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
    # Checked even when left out: force without any reason is the mistake to catch.
    reason: str = Field("", validate_default=True,
                        description="Why: required with force, recorded in the tags.")
    requested_by: str = Field("", description="Who asks (default: the operating-system user).")
    dry_run: bool = Field(False, description="Compare and report only: no alias moves and "
                          "no tag is written (to read two versions side by side).")

    @field_validator("ks")
    @classmethod
    def _positive_ks(cls, value: list[int]) -> list[int]:
        return positive_ks(value)

    @field_validator("reason")
    @classmethod
    def _reason_with_force(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("force") and not value.strip():
            raise ValueError("force needs a reason: say why the comparison is overridden")
        return value

    @model_validator(mode="after")
    def _dry_run_alone(self) -> PromotionConfig:
        if self.dry_run and self.force:
            raise ValueError("dry_run moves nothing, so force has nothing to override: "
                             "give one of them")
        return self

    @model_validator(mode="after")
    def _primary_at_a_computed_k(self) -> PromotionConfig:
        name, _, k = self.primary_metric.partition("@")
        if not k.isdigit() or int(k) not in self.ks:
            raise ValueError(f"primary_metric {self.primary_metric!r} must be at one of the "
                             f"computed K ({self.ks})")
        return self


class ForecastConfig(_Model):
    """The demand forecast: held-out weeks, horizon, which products, where it goes."""

    test_weeks: int = Field(8, ge=1, le=52, description="Weeks held out at the end to "
                            "score every method.")
    horizon: int = Field(4, ge=1, le=26, description="Weeks forecast ahead.")
    min_week_share: float = Field(0.5, ge=0.0, le=1.0, description="Keep products sold in "
                                  "at least this share of the weeks.")
    quantile: float = Field(0.9, gt=0.5, lt=1.0, description="Quantile of the upper bound.")
    seed: int = Field(42, description="Seed of the boosting models.")
    max_iter: int = Field(300, ge=1, le=5000, description="Boosting iterations.")
    learning_rate: float = Field(0.05, gt=0.0, le=1.0, description="Boosting learning rate.")
    min_samples_leaf: int = Field(40, ge=1, description="Smallest leaf of the boosted trees.")
    threads: int = Field(1, ge=1, le=256, description="OpenMP threads of the boosting. More "
                         "are faster on cores the forecast has to itself (Online Retail: "
                         "86 s on 2 against 122 s on 1), and many times slower while other "
                         "work keeps the cores busy.")
    experiment: ExperimentName = Field("shoprec-demand", description="MLflow experiment name.")
    output_dir: FolderName = Field("runs/forecast", description="Root of the Parquet data set "
                            "(forecast_date=YYYY-MM-DD/forecast.parquet).")
    category_output_dir: str | None = Field(None, description="Root of the weekly forecast "
                                            "per category (same layout). Default: beside "
                                            "output_dir, named output_dir + '_by_category'; "
                                            "empty: not written.")
    quarantine_dir: str | None = Field(None, description="Where the rows set aside by "
                                       "cleaning are written. Default: beside output_dir, "
                                       "named output_dir + '_quarantine' (not inside it: it "
                                       "is read back as one data set); empty: not written.")
    registered_model_name: NewRegisteredName = Field(
        "shoprec-demand", description="MLflow registered model of the forecast.")
    gate_margin: float = Field(0.05, ge=0.0, lt=1.0, description="The model's held-out WAPE "
                               "must be at least this much (relative) under the best naive "
                               "baseline's to become champion.")

    def beside_output(self, folder: str | None, suffix: str) -> str:
        """``folder`` as given (``""``: none), or by default ``output_dir``'s name + suffix.

        Beside the output folder, never inside it: ``.`` or ``..`` are named after the
        folder they stand for (``.`` run in ``/srv/x`` gives ``/srv/x_quarantine``).
        """
        if folder is not None:
            return folder
        root = Path(self.output_dir)
        if root.name in ("", ".", ".."):
            root = root.resolve()
        if not root.name:  # the file system's root: a folder inside it, then
            return str(root / f"forecast{suffix}")
        return str(root.with_name(root.name + suffix))

    @property
    def category_root(self) -> str:
        """Where the forecast per category goes (``""``: nowhere)."""
        return self.beside_output(self.category_output_dir, "_by_category")

    @property
    def quarantine_root(self) -> str:
        """Where the forecast's cleaning writes its quarantine files (``""``: nowhere)."""
        return self.beside_output(self.quarantine_dir, "_quarantine")


class BatchConfig(_Model):
    """Batch recommendations of every known user by a registered model."""

    registered_model_name: RegisteredName = Field(DEFAULT_MODEL_NAME,
                                                  description="MLflow registered model name.")
    alias: str = Field("champion", description="Registry alias of the model that scores.")
    version: str = Field("", description="A version number that scores instead of the alias "
                         "(an A/B test's arm, pinned while the aliases move); empty: the "
                         "alias's.")
    output_dir: FolderName = Field("runs/batch", description="Root of the date-partitioned Parquet "
                            "data set (generated_date=YYYY-MM-DD/recommendations.parquet), a "
                            "local folder.")
    k: int = Field(10, ge=1, le=1000, description="Recommendations per user.")

    @field_validator("version")
    @classmethod
    def _version_number(cls, value: str) -> str:
        value = value.strip()
        if value and not value.isdigit():
            raise ValueError(f"version is a registry version number, not {value!r}")
        return value

    @property
    def scored_by(self) -> str:
        """The alias that scores, or ``version N`` when a version is pinned."""
        return f"version {self.version}" if self.version else self.alias

    @field_validator("output_dir")
    @classmethod
    def _local_folder(cls, value: str) -> str:
        # The day's file is written beside its place and renamed into it, which object
        # stores do not do: a URL made a local folder "s3:" and failed as an internal error.
        if "://" in value:
            raise ValueError(f"the batch is written to a local folder (its day's file "
                             f"replaced whole, by a rename), not to {value!r}: write it "
                             "locally, then copy the folder to object storage (e.g. `aws s3 "
                             "sync`)")
        return value
    batch_size: int = Field(4096, ge=1, description="Users scored at a time (bounds memory).")
    explain: bool = Field(False, description="Add a 'because' column: the history items "
                          "behind each recommendation, with their shares (a model call per "
                          "user).")
    diversity: float = Field(0.0, ge=0.0, le=1.0, description="Weight of the novelty "
                             "re-ranking of each user's list (0: the model's order).")
    stock_path: str = Field("", description="CSV or Parquet file with item_id and units on "
                            "hand: products forecast to sell out beyond it are down-weighted "
                            "(empty: stock is not considered).")
    forecast: str = Field("models:/shoprec-demand@champion", description="The demand "
                          "forecast used with stock_path: a model URI, the forecast's "
                          "Parquet file or data set root, or 'none' (stock alone: only "
                          "products with no units left are held back).")
    stock_weeks: int = Field(0, ge=0, le=26, description="Forecast weeks the stock must last "
                             "(0: every week of the forecast).")
    demand_model_name: RegisteredName = Field(
        "shoprec-demand", description="The registered demand forecast whose champion is "
        "read when forecast is left at its default (one per shop).")

    @property
    def forecast_source(self) -> str:
        """The forecast read: ``forecast`` as given, or the shop's registered champion."""
        if self.forecast == BatchConfig.model_fields["forecast"].default:
            return f"models:/{self.demand_model_name}@champion"
        return self.forecast

    @model_validator(mode="after")
    def _forecast_with_stock(self) -> BatchConfig:
        # A forecast given without stock would be ignored without a word.
        if not self.stock_path and self.forecast != BatchConfig.model_fields["forecast"].default:
            raise ValueError("forecast is read with stock_path (the share of each product's "
                             "forecast demand its units cover); give stock_path too, or "
                             "leave forecast at its default")
        return self


def check_gate_sample(split: SplitConfig, training: TrainingConfig) -> None:
    """Refuse an evaluation sample smaller than the gate's floor of test users.

    Every comparison would rest on fewer users than ``gate_min_users``: no version could
    replace a champion, run after run, without a word.

    Raises:
        ConfigError: ``split.evaluation_users`` is below ``training.gate_min_users``.
    """
    from shoprec.errors import ConfigError

    sample = split.evaluation_users
    if sample is not None and sample < training.gate_min_users:
        raise ConfigError(f"--evaluation-users {sample} is below --gate-min-users "
                          f"{training.gate_min_users} (split.evaluation_users, "
                          "training.gate_min_users): no version could replace a champion; "
                          "raise the one, or lower the other")


def check_selection(split: SplitConfig, training: TrainingConfig) -> None:
    """Refuse a run that must choose on validation when the split asks for none.

    With no validation part every candidate scores 0 there, the first one listed "wins"
    and is published, whatever its test figures; a search's trials tie the same way.

    Raises:
        ConfigError: No validation part, and more candidates than popularity.
    """
    from shoprec.errors import ConfigError

    option, value = {"temporal": ("--validation-days", split.validation_days),
                     "random": ("--validation-fraction", split.validation_fraction),
                     "leave-last": ("--validation-n", split.validation_n)}[split.method]
    if value > 0:
        return
    # popularity, the gate's baseline, is always a candidate, so any other family (and
    # with it any blend or search) makes a choice.
    if len(training.models) > 1:
        raise ConfigError(
            f"{option} {value:g} leaves no validation part, and the run chooses among "
            f"{len(training.models)} candidates ({', '.join(training.models)}) on it: "
            "every one would score 0 and the first listed would be published whatever its "
            f"test figures; give {option} a value above 0")
