"""Publishing to the MLflow registry: the gate, logging the pyfunc model, aliases.

Every new version gets the alias ``challenger``; it becomes ``champion`` only if it passes
the gate: better than popularity by the configured margin on the primary test metric, and
no worse than the current champion's recipe retrained on the same training split and scored
on the same test users (:mod:`shoprec.registry.recipe`). When it passes, the outgoing
champion becomes ``previous-champion`` and both moves are logged like a promotion.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shlex
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from shoprec.registry import runs, tracking
from shoprec.registry.aliases import (
    CHALLENGER,
    CHAMPION,
    ChampionBusyError,
    actor,
    alias_version,
    champion_busy,
    finish_interrupted_move,
    move_champion,
    now,
    set_alias,
)
from shoprec.registry.recipe import (
    TEST_USERS_TAG,
    CatalogueSketch,
    ChampionReference,
    param_text,
    sketch_overlap,
)
from shoprec.registry.requirements import model_requirements
from shoprec.registry.rule import factor, replaces_champion, shown_apart

logger = logging.getLogger(__name__)

PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")
#: The shoprec package folder, copied into every registered model (MLflow code_paths).
PACKAGE_DIR = Path(__file__).resolve().parents[1]


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
    champion_version: str | None = None
    #: Test users the candidate was judged on, and the fewest that replace a champion.
    test_users: int = 0
    min_users: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)

    def describe(self) -> str:
        """One line per check, for reports and tags."""
        return "; ".join(f"{c.name}: {'pass' if c.passed else 'fail'} ({c.reason})"
                         for c in self.checks)


def gate(metric: str, candidate: dict[str, float], popularity: dict[str, float] | None,
         margin: float, champion: ChampionReference | None = None,
         champion_test: dict[str, float] | None = None,
         champion_problem: str | None = None,
         weighting: dict[str, Any] | None = None, min_users: int = 0,
         catalogue: CatalogueSketch | None = None, shoppers: CatalogueSketch | None = None,
         titled: CatalogueSketch | None = None, cutoff: str | None = None,
         start: str | None = None, winner: str = "",
         repeat_items: bool = False) -> GateVerdict:
    """Decide whether a candidate may become champion.

    The champion is compared like for like: its recipe retrained on this run's training
    split and scored on the same test users (``champion_test``), never the champion's own
    refit, which may have been trained on this run's test period.

    Args:
        metric: The primary metric, e.g. ``ndcg@10``.
        candidate: The candidate's test metrics.
        popularity: Popularity's test metrics on the same split (``None`` if it failed).
        margin: Relative margin over popularity (0.05 means 5% better).
        champion: The current champion (``None`` or an unset version: there is none). A
            reference with ``error`` set (registry unreadable, no recipe) fails the check.
        champion_test: The champion recipe's test metrics on this run's split.
        champion_problem: Why the recipe has no metrics (it failed or was skipped here).
        weighting: This run's event weighting; when the champion's recipe records another,
            the verdict says that both were compared with this run's.
        min_users: Test users the comparison must rest on to replace a champion
            (``candidate["users"]``); with fewer, a holiday's handful, the champion stays.
        catalogue: This run's catalogue sketch (:func:`recipe.catalogue_sketch`): when the
            champion records one and the smaller of the two catalogues shares under
            :data:`MIN_CATALOGUE_OVERLAP` of its items with the other, the data is another
            shop's and the champion stays.
        shoppers: This run's shoppers' sketch: sharing under that share with the
            champion's (shoppers re-numbered), or holding under :data:`MIN_DATA_SHARE` of
            its shoppers (an export cut short), the champion stays.
        titled: This run's items-with-titles sketch: the same ids under other titles (two
            shops numbering their products alike) fail ``same_catalogue`` too.
        cutoff: This run's latest event (ISO 8601): data ending over a day before the
            champion's (an old export) keeps the champion.
        start: This run's first event (ISO 8601): with ``cutoff``, the period its shoppers
            and items were counted over, against the champion's.
        winner: The candidate judged, when known: popularity itself is said to be so.
        repeat_items: Whether this run counts reorders (``--repeat-items``): a champion
            trained the other way is not compared (its lists keep, or leave out, what a
            shopper bought; tonight's figures measure the other thing).

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
        shown, baseline, barred = shown_apart(value, float(popularity[metric]), bar)
        checks.append(GateCheck(
            "beats_popularity", value > bar, value, float(popularity[metric]),
            f"{metric} {shown} vs popularity {baseline}"
            + (f" x {factor(margin)} = {barred}" if margin else "")
            + (": the winner is the popularity baseline itself (no model did better on "
               "validation)" if winner == "popularity" else "")))
    name = "not_worse_than_champion"
    version = None if champion is None else champion.version
    if champion is not None and champion.error:
        checks.append(GateCheck(name, False, value, None, champion.error))
    elif champion is None or version is None:
        checks.append(GateCheck(name, True, value, None, "no champion yet"))
    elif champion.repeat_items is not None and champion.repeat_items != repeat_items:
        # A night without the flag replaced a buy-again champion (0.04 "new products only"
        # against 0.10) and the shop's lists lost every reorder, unsaid.
        theirs = "with" if champion.repeat_items else "without"
        ours = "with" if repeat_items else "without"
        checks.append(GateCheck(
            name, False, value, None,
            f"champion version {version} was trained {theirs} --repeat-items and this run "
            f"{ours} it: their figures measure different lists (reorders counted or not), "
            f"and its served lists {'keep' if champion.repeat_items else 'leave out'} a "
            f"shopper's own items; run {theirs} --repeat-items as the champion was, or, to "
            f"change on purpose, {_FORCE}"))
    elif champion_test is None or metric not in champion_test:
        what = champion.recipe.describe() if champion.recipe else "recipe"
        checks.append(GateCheck(
            name, False, value, None,
            f"champion version {version}'s recipe {what} could not be retrained on this "
            f"run's data: {champion_problem or 'no result'}"))
    else:
        reference = float(champion_test[metric])
        note = ""
        if champion.recipe and champion.recipe.weighting and weighting \
                and _with_defaults(champion.recipe.weighting) != _with_defaults(weighting):
            note = ("; note: the champion was trained with another event weighting, both are "
                    "compared with this run's")
        shown, theirs = shown_apart(value, reference)
        passed = replaces_champion(value, reference)[0]
        if not passed:
            note += _served_age(version, champion, cutoff) + _recipe_values(champion)
        checks.append(GateCheck(
            name, passed, value, reference,
            f"{metric} {shown} vs {theirs} for champion version {version}'s recipe "
            f"{champion.recipe.describe() if champion.recipe else ''} retrained on this run's "
            f"training split, same test users{note}"))
    if version is not None and not (champion is not None and champion.error) and min_users:
        users = int(candidate.get("users", 0))
        # A first champion is published on any number of users: a new shop's, on 13, kept
        # one judged on 48 out for days. One judged on as many as it was passes.
        judged_on = champion.test_users if champion is not None else None
        floor = min(min_users, judged_on) if judged_on else min_users
        enough = users >= max(floor, 1)
        checks.append(GateCheck(
            "enough_test_users", enough, float(users), float(floor),
            f"{users:,} test users evaluated"
            + (f", at least the {min_users:,} a champion is replaced on" if users >= min_users
               else f", fewer than the {min_users:,} a champion is replaced on, but at least "
                    f"the {judged_on:,} champion version {version} was itself published on"
                    if enough else
                    f", fewer than the {min_users:,} a champion is replaced on "
                    "(--gate-min-users): one user's list moves the figures more than the "
                    "versions differ"
                    + (f" (champion version {version} was published on {judged_on:,})"
                       if judged_on else "")
                    + (_served_age(version, champion, cutoff) if champion is not None
                       else ""))))
    overlap = sketch_overlap(catalogue, champion.catalogue) \
        if version is not None and champion is not None and not champion.error else None
    if overlap is not None:
        checks.append(GateCheck(
            "same_catalogue", overlap >= MIN_CATALOGUE_OVERLAP, overlap,
            MIN_CATALOGUE_OVERLAP,
            f"this run's items and champion version {version}'s: about {overlap:.0%} of "
            "the smaller catalogue in common (estimated from a sample of ids)"
            + ("" if overlap >= MIN_CATALOGUE_OVERLAP else
               ": another shop's data, or a registered "
               "model name meant for another (--registered-model-name)? The champion's "
               "recipe retrained on this data says nothing of the shop it serves; if the "
               f"catalogue was replaced, {_FORCE}")))
    elif version is not None and champion is not None and not champion.error \
            and catalogue and champion.catalogue:
        # Said, not left out: a catalogue cut to its best sellers showed no line at all.
        checks.append(GateCheck(
            "same_catalogue", True, float(catalogue.size), float(champion.catalogue.size),
            f"not judged: this run's {catalogue.size:,} items and champion version "
            f"{version}'s {champion.catalogue.size:,} are too far apart in number to "
            "estimate from samples what they share (enough_items says whether the "
            "catalogue is whole)"))
    if version is not None and champion is not None and not champion.error:
        checks += _data_checks(version, champion, overlap,
                               _Period(catalogue, shoppers, titled, start, cutoff))
    return GateVerdict(all(c.passed for c in checks), metric, checks, version,
                       int(candidate.get("users", 0)), min_users)


def _recipe_values(champion: ChampionReference) -> str:
    """The champion recipe's own values, as the options that train them (a reason's end).

    A tuned champion (``--param ease.regularization=132.93``) retrained beat the nightly's
    configured ease every night, and the night was refused with no word of how to give
    the nightly those values: the served model only grew older.
    """
    recipe = champion.recipe
    if recipe is None:
        return ""
    own = recipe.own_values()
    if not own:
        return ""
    given = " ".join(shlex.quote(f"--param={recipe.candidate}.{k}={param_text(v)}")
                     for k, v in sorted(own.items()))
    return (f"; to train the champion's own values as a candidate each night, give them "
            f"(with {recipe.candidate} among --models): {given} (training.params in a "
            "deployment's form)")


def _served_age(version: str, champion: ChampionReference, cutoff: str | None) -> str:
    """How much older the data of the champion that stays is, when it is (a reason's end).

    The recipe is compared retrained on this run's data, but the champion that goes on
    serving is the one trained before: said, so a stale champion does not go unseen.
    """
    theirs = champion.recipe.data_cutoff if champion.recipe else None
    if not cutoff or not theirs:
        return ""
    days = (pd.to_datetime(cutoff, utc=True) - pd.to_datetime(theirs, utc=True)) \
        / pd.Timedelta(days=1)
    if days < 1:
        return ""
    return (f"; version {version} stays champion as it was trained, on data up to "
            f"{theirs[:10]} ({days:.0f} days before this run's): to publish this version "
            f"anyway, {_FORCE}")


#: The least share of the smaller catalogue's items a run and the champion share for one
#: to replace the other: a shop's next night shares most; another shop's data none.
MIN_CATALOGUE_OVERLAP = 0.1
#: The least share of the champion's shoppers a run's data must hold: a nightly export cut
#: to its first tenth (a failed upload) published a model that knew 70 of 795 shoppers.
MIN_DATA_SHARE = 0.5


#: Data spanning at least this share of the champion's period counts as "as long":
#: fewer shoppers or items over it are a quieter season, not an export cut short.
SAME_SPAN = 0.9
#: The least share of the champion's shoppers or items a run over as long a period must
#: hold: the UCI data set's quietest month holds 46% of its busiest month's shoppers, so a
#: month's window in January fell under MIN_DATA_SHARE on a healthy export.
MIN_SAME_SPAN_SHARE = 0.25


@dataclass(frozen=True)
class _Period:
    """What this run's data records for the data checks."""

    catalogue: CatalogueSketch | None
    shoppers: CatalogueSketch | None
    titled: CatalogueSketch | None
    start: str | None
    cutoff: str | None


def _days(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return float((pd.to_datetime(end, utc=True) - pd.to_datetime(start, utc=True))
                 / pd.Timedelta(days=1))


def _enough(name: str, what: str, ours: int, theirs: int, version: str,
            span: tuple[float, float] | None, quiet: bool = True,
            cut: str = "an export cut short?", change: str = "a shorter window") -> GateCheck:
    """Whether this run holds enough of the champion's shoppers or items (``what``).

    ``quiet``: whether fewer over as long a period may be a quieter season (for products,
    only when the shoppers fell too: a catalogue cut to its best sellers keeps them).
    """
    share = ours / max(theirs, 1)
    said = f"{ours:,} {what} in this run's data, {theirs:,} in champion version {version}'s"
    if share >= MIN_DATA_SHARE:
        return GateCheck(name, True, float(ours), float(theirs), said)
    if span is not None:
        said += f" (over {span[0]:.0f} and {span[1]:.0f} days)"
    if quiet and span is not None and span[0] >= SAME_SPAN * span[1] \
            and share >= MIN_SAME_SPAN_SHARE:
        return GateCheck(name, True, float(ours), float(theirs),
                         f"{said}: under {MIN_DATA_SHARE:.0%}, but over as long a period: a "
                         "quieter season")
    return GateCheck(name, False, float(ours), float(theirs),
                     f"{said}: under {MIN_DATA_SHARE:.0%}, {cut} The champion stays; after a "
                     f"deliberate change ({change}), {_FORCE}")


def _data_checks(version: str, champion: ChampionReference, overlap: float | None,
                 period: _Period) -> list[GateCheck]:
    """The checks that this run's data is the champion's shop's, whole and current.

    A reader's bad export nights, each of which went live with every other check passed:
    another shop whose product ids were the same numbers, shoppers re-numbered by a new
    CRM, an export cut to a tenth, an old export, one cut to its 150 best sellers. Each
    check runs only where the champion recorded what it needs (versions registered before
    it record none).
    """
    checks = []
    shoppers, titled, cutoff = period.shoppers, period.titled, period.cutoff
    theirs = champion.recipe.data_cutoff if champion.recipe else None
    ours_days, their_days = _days(period.start, cutoff), _days(champion.data_start, theirs)
    span = (ours_days, their_days) if ours_days is not None and their_days else None
    same_titles = sketch_overlap(titled, champion.titled)
    if overlap is not None and overlap >= MIN_CATALOGUE_OVERLAP and same_titles is not None:
        checks.append(GateCheck(
            "same_titles", same_titles >= MIN_CATALOGUE_OVERLAP, same_titles,
            MIN_CATALOGUE_OVERLAP,
            f"this run's products and champion version {version}'s: about "
            f"{same_titles:.0%} of the smaller catalogue with the same id and title"
            + ("" if same_titles >= MIN_CATALOGUE_OVERLAP else
               ": the same ids name other products, another shop's data numbered alike? If "
               f"the shop renamed its products, {_FORCE}")))
    common = sketch_overlap(shoppers, champion.shoppers)
    if common is not None:
        checks.append(GateCheck(
            "same_shoppers", common >= MIN_CATALOGUE_OVERLAP, common, MIN_CATALOGUE_OVERLAP,
            f"this run's shoppers and champion version {version}'s: about {common:.0%} of "
            "the smaller set in common"
            + ("" if common >= MIN_CATALOGUE_OVERLAP else
               ": shopper ids re-numbered (a new CRM, another pseudonym key) or another "
               "shop's data? Requests by the ids served now would get popularity; after a "
               f"deliberate change, {_FORCE}")))
    fewer_shoppers = False
    if shoppers is not None and champion.shoppers is not None:
        fewer_shoppers = shoppers.size < MIN_DATA_SHARE * champion.shoppers.size
        checks.append(_enough("enough_data", "shoppers", shoppers.size,
                              champion.shoppers.size, version, span))
    if period.catalogue is not None and champion.catalogue is not None:
        # Fewer products bought by as many shoppers is a catalogue cut, not a season.
        checks.append(_enough("enough_items", "products", period.catalogue.size,
                              champion.catalogue.size, version, span, quiet=fewer_shoppers,
                              cut="a catalogue cut to its best sellers, or an export cut "
                              "short?", change="a smaller catalogue"))
    if cutoff and theirs:
        # Naive times (a library caller's) are UTC, as everywhere in shoprec.
        behind = (pd.to_datetime(theirs, utc=True) - pd.to_datetime(cutoff, utc=True)) \
            / pd.Timedelta(days=1)
        checks.append(GateCheck(
            "current_data", behind <= 1.0, -behind, 0.0,
            f"this run's data ends {cutoff[:16]}, champion version {version}'s "
            f"{theirs[:16]}"
            + ("" if behind <= 1.0 else
               f": {behind:.1f} days older, an old export? The champion stays; to publish "
               f"it anyway, {_FORCE}")))
    return checks


#: The gate's checks of the data itself (not of the model): a failure means the run's data
#: is not the champion's shop's, whole and current.
DATA_CHECKS = ("same_catalogue", "same_titles", "same_shoppers", "enough_data",
               "enough_items", "current_data")
#: Version tags: the data checks its gate failed (comma-separated), and the champion
#: version they compared with.
GATE_DATA_TAG = "gate_data_failed"
GATE_CHAMPION_TAG = "gate_champion"
#: The way past a data check, for a person who knows why the data changed (this version
#: stays challenger, the version `promote` takes by default).
_FORCE = ("`shoprec promote --force --reason TEXT` (it takes the challenger: this run's "
          "version, until another run's replaces it)")


def _with_defaults(weighting: dict[str, Any]) -> dict[str, Any]:
    """A recorded weighting, with fields added since it was recorded at their defaults.

    Their defaults are how it was weighted; a record that cannot be read is compared as is.
    """
    from shoprec.config import WeightingConfig

    try:
        return WeightingConfig(**weighting).model_dump()
    except (TypeError, ValueError):
        return dict(weighting)


def signature_and_example(user_id: str, item_ids: list[str], query: str = ""
                          ) -> tuple[Any, pd.DataFrame]:
    """The pyfunc signature (DESIGN.md request schema) and a small input example."""
    from mlflow.models import ModelSignature
    from mlflow.types import DataType
    from mlflow.types.schema import Array, ColSpec, Object, Property, Schema

    inputs = Schema([
        ColSpec(DataType.string, "user_id", required=False),
        ColSpec(Array(DataType.string), "recent_items", required=False),
        ColSpec(DataType.string, "query", required=False),
        ColSpec(DataType.long, "k", required=False),
        ColSpec(DataType.boolean, "explain", required=False),
        ColSpec(DataType.double, "diversity", required=False),
        ColSpec(DataType.string, "item_id", required=False),
    ])
    reason = Object([Property("item_id", DataType.string), Property("title", DataType.string),
                     Property("share", DataType.double)])
    outputs = Schema([
        ColSpec(Array(DataType.string), "item_ids"),
        ColSpec(Array(DataType.double), "scores"),
        ColSpec(Array(DataType.string), "titles"),
        ColSpec(DataType.string, "source"),
        # Present when a request sets explain: per recommended item, the history behind it.
        ColSpec(Array(Array(reason)), "explanations", required=False),
    ])
    example = pd.DataFrame({"user_id": [user_id, "new-shopper", user_id],
                            "recent_items": [[], item_ids[:2], []],
                            "query": ["", "", query], "k": [5, 5, 5]})
    return ModelSignature(inputs=inputs, outputs=outputs), example


#: The project's code, whose uncommitted changes make a commit name the wrong code.
CODE_PATHS = ("shoprec", "cli", "flows", "tasks", "expectations", "pyproject.toml")


def git_commit() -> str:
    """The project's git commit, or ``unknown`` outside a checkout.

    ``-dirty`` follows it when the code differs from that commit (edited or new files): a
    reader's version trained with a family not yet committed named a commit without it.
    """
    # No index lock taken: a training beside a person committing must not block them.
    quiet = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=PACKAGE_DIR,
                             capture_output=True, text=True, timeout=10, check=False, env=quiet)
        lines = top.stdout.splitlines()
        # Installed inside another project's checkout (a virtual environment in it), the
        # commit found would be that project's.
        if top.returncode != 0 or len(lines) != 2 \
                or Path(lines[0]).resolve() != PACKAGE_DIR.parent.resolve():
            return "unknown"
        changed = subprocess.run(["git", "status", "--porcelain", "--", *CODE_PATHS],
                                 cwd=PACKAGE_DIR.parent, capture_output=True, text=True,
                                 timeout=10, check=False, env=quiet)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    dirty = changed.returncode == 0 and bool(changed.stdout.strip())
    return lines[1].strip() + ("-dirty" if dirty else "")


def bundle_requirements(bundle_dir: str | Path) -> list[str]:
    """The pip requirements of the bundle's models.

    The winner, its popularity fallback and the search model when there is one (see
    :mod:`shoprec.registry.requirements`).
    """
    from shoprec.models import CANDIDATES, ContentRecommender, Popularity, Recommender

    folder = Path(bundle_dir)
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    classes: list[type[Recommender]] = [CANDIDATES[meta["model"]], Popularity]
    if meta["model"] == "blend":
        # A blend scores through its members: their families' imports are its own.
        config = json.loads((folder / "model" / "config.json").read_text(encoding="utf-8"))
        classes += [CANDIDATES[member["name"]] for member in config["params"]["members"]]
    if (folder / "search").exists():
        classes.append(ContentRecommender)
    return model_requirements(classes)


def _discard_partial_upload(run_id: str, name: str) -> None:
    """Remove what an interrupted upload left in the artifact store.

    When the store cannot be reached now, the next run's sweep does it
    (:func:`runs.discard_unfinished_models`).
    """
    try:
        client = tracking.client()
        experiment = client.get_run(run_id).info.experiment_id
        runs.discard_unfinished_models(experiment, run_id=run_id)
        # Registration may have happened before the failure (MLflow makes more calls after
        # it): a version of this run that was never labelled is withdrawn too.
        for found in client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"):
            if "gate" not in (found.tags or {}):
                _withdraw(name, str(found.version), alias_version(name, CHALLENGER))
    except Exception as exc:  # noqa: BLE001 - the upload's own error is the one to report
        logger.warning("could not remove the partial model of run %s now (%s); the next run "
                       "removes it", run_id, tracking.redact(str(exc)))


#: The statuses of a run that will never label its version: it ended without doing so.
_ENDED = ("FAILED", "KILLED")


def withdraw_unlabelled(name: str) -> list[str]:
    """Withdraw the versions of ``name`` that a run registered and never labelled.

    A run killed (``kill -9``, a machine lost) between MLflow's registration and its
    labelling leaves a version with no ``gate`` tag and no alias, which a person would take
    for a published model; the next run that publishes to ``name`` deletes it, once the run
    that made it has ended (the next run marks a killed one failed before publishing). Only
    versions of shoprec's own runs (tagged with their process) are touched: a version a
    person registered by hand has no such run, and is left alone. A version some alias
    points at is left too.

    Returns:
        The versions withdrawn.
    """
    from mlflow.exceptions import MlflowException

    client = tracking.client()
    try:
        # A search may leave the versions' aliases out: the model's own list is complete.
        pointed = {str(version) for version in
                   (client.get_registered_model(name).aliases or {}).values()}
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
    withdrawn = []
    for found in client.search_model_versions(f"name = '{name}'"):
        if "gate" in (found.tags or {}) or str(found.version) in pointed or not found.run_id:
            continue
        try:
            run = client.get_run(found.run_id)
        except Exception:  # noqa: BLE001 - a run deleted by hand: not ours to judge
            continue
        if run.info.status not in _ENDED or runs.PID_TAG not in run.data.tags:
            continue
        client.delete_model_version(name, str(found.version))
        withdrawn.append(str(found.version))
        logger.warning("withdrew %s version %s: run %s registered it and ended (%s) before "
                       "labelling it", name, found.version, found.run_id, run.info.status)
    return withdrawn


def _withdraw_copies(name: str, run_id: str, version: str) -> None:
    """Delete the other versions this run registered, unlabelled: copies of ``version``.

    MLflow's client retries a request whose answer is slow to come (a busy tracking
    server), and a registration the server had made is then made again: the first copy
    would stay for good, with no tags, reading as a published model.
    """
    try:
        client = tracking.client()
        for found in client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"):
            if str(found.version) != version and "gate" not in (found.tags or {}):
                client.delete_model_version(name, str(found.version))
                logger.warning("withdrew %s version %s: a second registration of run %s's "
                               "model (a retried request) made version %s", name,
                               found.version, run_id, version)
    except Exception as exc:  # noqa: BLE001 - the version itself is fine; say what is left
        logger.warning("could not look for copies of %s version %s (%s); delete any other "
                       "version of run %s without a 'gate' tag in the MLflow UI", name,
                       version, tracking.redact(str(exc)), run_id)


def _label(name: str, version: str, verdict: GateVerdict, tags: dict[str, str]
           ) -> tuple[bool, str | None, list[str]]:
    """Tag a new version and set its aliases.

    The version becomes challenger and, if the gate passed and champion did not move
    meanwhile, champion. Returns (passed, the champion before, the aliases set).
    """
    mlflow_client = tracking.client()
    passed = verdict.passed
    current = alias_version(name, CHAMPION) if passed else None
    if passed and current != verdict.champion_version:
        # Another run or a person moved champion while this one trained: the comparison
        # was made against a version that no longer serves, so it does not count.
        passed = _stays_challenger(
            verdict, f"champion moved from version {verdict.champion_version} to {current} "
            "during this run")
    elif passed and (busy := champion_busy(mlflow_client, name)) is not None:
        # A promotion or rollback is moving champion now: this run's comparison may be
        # against the version it moves away. The model is kept, not thrown away.
        passed = _stays_challenger(verdict, f"{busy} was moving champion as this run "
                                            "published")
    _write_verdict(mlflow_client, name, version, verdict, tags, passed)
    set_alias(mlflow_client, name, CHALLENGER, version)
    aliases = [CHALLENGER]
    if passed:
        run = tags.get("prefect_flow_run_id")
        try:
            move_champion(name, version, current, "train-gate",
                          f"flow run {run}" if run else actor(),
                          f"gate passed: {verdict.describe()}", now())
        except ChampionBusyError as exc:  # began between the check above and the move
            passed = _stays_challenger(verdict, f"{exc.busy} was moving champion as this "
                                                "run published")
            _write_verdict(mlflow_client, name, version, verdict, tags, passed)
            return passed, current, aliases
        aliases.append(CHAMPION)
    return passed, current, aliases


def _stays_challenger(verdict: GateVerdict, why: str) -> bool:
    """Fail ``verdict`` with a ``champion_unchanged`` check saying ``why``; returns False."""
    verdict.passed = False
    verdict.checks.append(GateCheck(
        "champion_unchanged", False, verdict.checks[0].candidate, None,
        f"{why}; this version stays challenger: compare again (`shoprec promote` for a "
        "recommender, another `shoprec forecast` for the demand forecast)"))
    return False


def _write_verdict(client: Any, name: str, version: str, verdict: GateVerdict,
                   tags: dict[str, str], passed: bool) -> None:
    """The version's tags, gate verdict and description line."""
    failed = [c.name for c in verdict.checks if not c.passed and c.name in DATA_CHECKS]
    all_tags = {**tags, "gate": "pass" if passed else "fail",
                "gate_checks": verdict.describe(),
                # Read by `promote`: data its gate found unlike the champion's stays refused.
                GATE_DATA_TAG: ",".join(failed),
                GATE_CHAMPION_TAG: verdict.champion_version or "",
                # Read when this version is the champion: a later run judged on as many
                # test users replaces it (enough_test_users).
                TEST_USERS_TAG: str(verdict.test_users)}
    for key, value in all_tags.items():
        client.set_model_version_tag(name, version, key, str(value)[:5000])
    # What the registry's Models tab shows first: which model, how good, and the verdict.
    what = (f"{tags['candidate']}: test {tags.get('primary_metric', '')} "
            f"{tags.get('primary_metric_test', '')}; " if "candidate" in tags else "")
    client.update_model_version(
        name, version, description=f"{what}gate {'passed' if passed else 'not passed'}: "
                                   f"{verdict.describe()}"[:5000])


def _withdraw(name: str, version: str, challenger_before: str | None) -> None:
    """Delete a version whose labelling did not finish, and put challenger back.

    A version that became champion stays (champion never points at nothing); when the
    registry cannot be reached, the version stays and the warning says so.
    """
    try:
        if alias_version(name, CHAMPION) == version:
            return
        client = tracking.client()
        client.delete_model_version(name, version)
        # Put challenger back only if nobody moved it meanwhile (deleting the version
        # removed the alias if it pointed there).
        if challenger_before is not None and challenger_before != version \
                and alias_version(name, CHALLENGER) is None:
            set_alias(client, name, CHALLENGER, challenger_before)
        logger.warning("withdrew %s version %s: publishing it did not finish", name, version)
    except Exception as exc:  # noqa: BLE001 - the original error is the one to report
        logger.warning("%s version %s was registered but not labelled, and could not be "
                       "withdrawn (%s): delete it in the MLflow UI", name, version,
                       tracking.redact(str(exc)))


def register_pyfunc(*, run_id: str, name: str, verdict: GateVerdict, tags: dict[str, str],
                    python_model: Path, artifacts: dict[str, str], signature: Any,
                    example: pd.DataFrame, requirements: list[str],
                    code_paths: list[str] | None = None) -> dict[str, Any]:
    """Log a models-from-code pyfunc in ``run_id``, register it and set its aliases.

    The recommender and the demand forecast publish through here, under the same rules: a
    version whose upload or labelling did not finish is withdrawn, the registry left as it
    was (:func:`_discard_partial_upload`, :func:`_withdraw`), and one left unlabelled by a
    killed run is withdrawn by the next (:func:`withdraw_unlabelled`); ``champion`` moves
    only when the gate passed and nobody moved it meanwhile (:func:`_label`).

    Returns:
        ``{"name", "version", "aliases", "model_uri", "previous_champion",
        "previous_challenger"}`` (the version that was champion before, when this one took
        its place; the challenger before, when it was not the champion too).
    """
    import mlflow

    tracking.point_mlflow()
    try:
        finish_interrupted_move(name)
        withdraw_unlabelled(name)
    except Exception as exc:  # noqa: BLE001 - housekeeping must never stop a publication
        logger.warning("could not look for what a stopped run or promotion left of %s (%s); "
                       "the next run looks again", name, tracking.redact(str(exc)))
    client = tracking.client()
    status_before = client.get_run(run_id).info.status
    said = io.StringIO()
    try:
        # MLflow prints "Created version 'N' ..." to stderr itself, not through logging:
        # a scheduler mailed those lines every night. They go to this module's log.
        with mlflow.start_run(run_id=run_id), contextlib.redirect_stderr(said):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(python_model),
                artifacts=artifacts,
                code_paths=code_paths,
                signature=signature,
                input_example=example,
                pip_requirements=requirements,
                registered_model_name=name,
            )
    except BaseException:  # Ctrl-C, SIGTERM or a server gone during the upload
        _discard_partial_upload(run_id, name)
        raise
    finally:
        for line in said.getvalue().splitlines():
            # Its registration lines are progress; anything else it said (a warning) is
            # passed on as one.
            if line.strip():
                routine = line.startswith(("Successfully registered model", "Created version",
                                           "Registered model")) or " INFO " in line
                logger.log(logging.INFO if routine else logging.WARNING, "mlflow: %s",
                           line.strip())
    version = str(info.registered_model_version)
    _withdraw_copies(name, run_id, version)
    challenger_before = None
    try:
        # Leaving MLflow's run context ended the run FINISHED. Until this version is
        # labelled it must read RUNNING (a forecast's run had ended before publishing): a
        # kill -9 from here on is then seen by the next run, which closes the run and
        # withdraws this version if it was never labelled.
        client.update_run(run_id, status="RUNNING")
        challenger_before = alias_version(name, CHALLENGER)
        passed, current, aliases = _label(name, version, verdict, tags)
    except BaseException as exc:  # stopped, or the registry failed: no half-labelled version
        _withdraw(name, version, challenger_before)
        if status_before != "RUNNING":  # its owner had ended it: end it as this ended
            from shoprec.runtime import stopped_by_signal

            try:
                client.set_terminated(run_id, "KILLED" if stopped_by_signal(exc) else "FAILED")
            except Exception:  # noqa: BLE001 - the next run closes it (its process is gone)
                pass
        raise
    if status_before != "RUNNING":
        client.set_terminated(run_id, status_before)  # as it was: its owner had ended it
    logger.info("registered %s version %s with aliases %s", name, version, aliases)
    return {"name": name, "version": version, "aliases": aliases, "model_uri": info.model_uri,
            "previous_champion": current if passed else None,
            # Said to the person: a challenger under test (an A/B arm) loses its alias here;
            # one that was also the champion loses nothing worth a line.
            "previous_challenger": challenger_before if challenger_before not in (
                version, verdict.champion_version, current) else None}


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
        See :func:`register_pyfunc`.
    """
    signature, example = signature_and_example(example_user, example_items, example_query)
    return register_pyfunc(run_id=run_id, name=name, verdict=verdict, tags=tags,
                           python_model=PYFUNC_FILE, artifacts={"bundle": str(bundle_dir)},
                           signature=signature, example=example,
                           requirements=bundle_requirements(bundle_dir),
                           code_paths=[str(PACKAGE_DIR)])
