"""Promotion and rollback through MLflow registry aliases, as explicit, logged operations.

* ``champion`` serves; ``challenger`` is the latest trained version; ``previous-champion``
  is the version ``champion`` pointed at before the last promotion, so a rollback has
  somewhere to go.
* A promotion retrains the candidate's and the current champion's recipes (the candidate
  and hyperparameters each version records, :mod:`shoprec.registry.recipe`) on the latest
  data's training split and scores both on the same test users, the rule the training
  gate uses; it passes when the candidate is no worse on the primary metric, and every
  metric is reported with its delta. (Scoring the registered models themselves would not
  be fair: each was refit on all the data it had, which may include the test period.) A
  failed decision moves nothing unless forced, and forcing needs a reason.
* Every alias move is written to the registered model's tags (``alias_move.<time>``: a
  JSON record of alias, from, to, action, who, when, why) and to the promoted or demoted
  version's tags.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from shoprec.errors import ConfigError, RegistryError, ShopRecError
from shoprec.evaluation.metrics import direction
from shoprec.features.encoding import EncodedSplit
from shoprec.registry import tracking
from shoprec.registry.aliases import (
    CHALLENGER,
    CHAMPION,
    PENDING_ROLLBACK,
    PREVIOUS_CHAMPION,
    actor,
    alias_log,
    alias_version,
    describe,
    finish_interrupted_move,
    log_alias_move,
    move_champion,
    now,
    operation_owner,
    record_text,
    refuse_while_busy,
    set_alias,
    version_exists,
)
from shoprec.registry.recipe import (
    catalogue_sketch,
    read_catalogue,
    read_recipe,
    sketch_overlap,
    why_no_recipe,
)
from shoprec.registry.rule import factor, replaces_champion, shown_apart

logger = logging.getLogger(__name__)

__all__ = ["CHALLENGER", "CHAMPION", "PREVIOUS_CHAMPION", "PromotionDecision",
           "PromotionError", "PromotionRefused", "alias_log", "alias_version",
           "apply_promotion", "compare_with_champion", "decide", "rollback"]


class PromotionError(ShopRecError):
    """A promotion or rollback that cannot be done (nothing to promote or roll back to)."""


class PromotionRefused(ShopRecError):
    """The candidate failed the comparison with the champion and ``force`` was not given.

    Attributes:
        decision: The decision with its per-metric report.
    """

    def __init__(self, decision: PromotionDecision) -> None:
        super().__init__(f"promotion of {decision.name} version {decision.candidate_version} "
                         f"refused: {decision.why}. Pass --force --reason TEXT to override "
                         "(in the Prefect form: promotion.force and promotion.reason).")
        self.decision = decision


@dataclass
class MetricComparison:
    """One metric of the candidate against the champion on the same test split."""

    metric: str
    candidate: float
    champion: float | None
    delta: float | None
    decides: bool

    @property
    def verdict(self) -> str:
        """``better``, ``equal``, ``worse`` or ``no champion``.

        By the metric's :func:`~shoprec.evaluation.metrics.direction`: an error such as
        ``rmse`` is better lower, and a beyond-accuracy figure (``gini``...) is only
        ``higher`` or ``lower``, never better.
        """
        if self.delta is None:
            return "no champion"
        if self.delta == 0:
            return "equal"
        way = direction(self.metric)
        if way == "none":
            return "higher" if self.delta > 0 else "lower"
        return "better" if (self.delta > 0) == (way == "higher") else "worse"


@dataclass
class PromotionDecision:
    """The decision on a promotion and why.

    Attributes:
        name: Registered model name.
        candidate_version: The version asked to become champion.
        champion_version: The current champion, ``None`` if there is none.
        primary_metric: The metric that decides.
        margin: Relative margin the candidate must clear over the champion.
        passed: Whether the comparison passed.
        why: One sentence: the deciding comparison.
        comparisons: Every metric, candidate against champion.
        forced: Promoted although the comparison failed.
        reason: The operator's reason (required when forced).
        actor: Who asked.
        at: When (UTC, ISO 8601).
        promoted: Whether the aliases were moved.
        users: Test users the comparison was made on.
        basis: What was compared (which recipes, trained on what).
        dry_run: Compared only, as asked: no alias moved, no tag written.
    """

    name: str
    candidate_version: str
    champion_version: str | None
    primary_metric: str
    margin: float
    passed: bool
    why: str
    comparisons: list[MetricComparison] = field(default_factory=list)
    forced: bool = False
    reason: str = ""
    actor: str = ""
    at: str = ""
    promoted: bool = False
    users: int = 0
    basis: str = ""
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        out = asdict(self)
        for entry, comparison in zip(out["comparisons"], self.comparisons, strict=True):
            entry["verdict"] = comparison.verdict
        return out

    def to_markdown(self) -> str:
        """The per-metric report as Markdown (Prefect artifact, CLI)."""
        outcome = ("promoted (forced)" if self.forced and self.promoted else
                   "promoted" if self.promoted else
                   "compared only (dry run)" if self.dry_run else "refused")
        lines = [f"# Promotion of {self.name} version {self.candidate_version}: {outcome}", "",
                 f"- decision: {'pass' if self.passed else 'fail'}: {self.why}",
                 f"- current champion: "
                 f"{'version ' + self.champion_version if self.champion_version else 'none'}",
                 f"- compared on {self.users:,} test users of the latest data: {self.basis}",
                 f"- by {self.actor} at {self.at}"]
        if self.reason:
            lines.append(f"- reason: {self.reason}")
        lines += ["", "| metric | candidate | champion | delta | verdict |",
                  "| --- | ---: | ---: | ---: | --- |"]
        for c in self.comparisons:
            champion = "-" if c.champion is None else f"{c.champion:.4f}"
            delta = "-" if c.delta is None else f"{c.delta:+.4f}"
            name = f"**{c.metric}** (decides)" if c.decides else c.metric
            lines.append(f"| {name} | {c.candidate:.4f} | {champion} | {delta} | {c.verdict} |")
        return "\n".join(lines)


def decide(name: str, candidate_version: str, champion_version: str | None,
           candidate: dict[str, float], champion: dict[str, float] | None, primary: str,
           margin: float = 0.0) -> PromotionDecision:
    """Compare a candidate's test metrics with the champion's on the same split.

    The candidate passes when its primary metric is at least the champion's times
    ``1 + margin`` (always, when there is no champion). Every other metric is reported.

    Args:
        name: Registered model name.
        candidate_version: Version asked to become champion.
        champion_version: Current champion version, or ``None``.
        candidate: Candidate's metrics (``ndcg@10`` ...).
        champion: Champion's metrics on the same split, or ``None``.
        primary: Deciding metric.
        margin: Relative margin over the champion (0 means "no worse").

    Raises:
        ConfigError: ``primary`` is not among the metrics.
    """
    if primary not in candidate:
        raise ConfigError(f"primary metric {primary!r} is not among the computed metrics "
                          f"({', '.join(sorted(candidate))}); check --k and --primary-metric")
    comparisons = []
    # Only metrics both have: a rating model adds rmse, which another family has not.
    shared = [k for k in candidate if k != "users" and (champion is None or k in champion)]
    for metric in sorted(shared):
        reference = None if champion is None else float(champion[metric])
        comparisons.append(MetricComparison(
            metric, float(candidate[metric]), reference,
            None if reference is None else float(candidate[metric]) - reference,
            metric == primary))
    value = float(candidate[primary])
    if champion is None:
        passed, why = True, "there is no champion yet"
    else:
        passed, bar = replaces_champion(value, float(champion[primary]), margin)
        shown, theirs, barred = shown_apart(value, float(champion[primary]), bar)
        why = (f"{primary} {shown} {'>=' if passed else '<'} champion version "
               f"{champion_version}'s {theirs}"
               + (f" x {factor(margin)} = {barred}" if margin else "")
               + _within_noise(primary, candidate, champion))
    return PromotionDecision(name, str(candidate_version), champion_version, primary, margin,
                             passed, why, comparisons, users=int(candidate.get("users", 0)))


def _within_noise(primary: str, candidate: dict[str, float],
                  champion: dict[str, float]) -> str:
    """A clause when the two figures are closer than their standard error, else ``""``.

    The decision stays on the point estimates (a margin is the way to ask for more); the
    clause tells the person how small the gap is beside the figures' own spread.
    """
    name, _, k = primary.partition("@")
    key = f"{name}_se@{k}"
    if key not in candidate or key not in champion:
        return ""
    error = max(float(candidate[key]), float(champion[key]))
    gap = abs(float(candidate[primary]) - float(champion[primary]))
    if not error > 0 or gap >= error:
        return ""
    # Of each figure, not of their difference (per-user figures are not kept): a paired
    # comparison on the same users could still tell them apart, so no verdict is drawn.
    return (f" (the gap, {gap:.4f}, is smaller than the figures' own standard error, up to "
            f"{error:.4f})")


def resolve_candidate(name: str, version: str | None) -> str:
    """The version to promote: ``version`` if given, else the current ``challenger``.

    Raises:
        PromotionError: The version or the challenger does not exist.
        RegistryError: The registry could not be read.
    """
    from mlflow.exceptions import MlflowException

    if version is None:
        found = alias_version(name, CHALLENGER)
        if found is None:
            raise PromotionError(f"{name} has no '{CHALLENGER}' version to promote; train a "
                                 "model first or pass --version N")
        try:
            tags = tracking.client().get_model_version(name, found).tags or {}
        except MlflowException as exc:
            raise RegistryError(f"could not read {name} version {found} from the MLflow "
                                f"registry at {tracking.display_uri()}: "
                                f"{tracking.redact(exc.message)}") from exc
        if "rolled_back_at" in tags:
            # After a rollback the bad version usually still holds challenger: a plain
            # `promote` must not put it back without a person naming it.
            raise PromotionError(
                f"{name}'s challenger, version {found}, was rolled back by "
                f"{tags.get('rolled_back_by', '?')} at {tags['rolled_back_at']}"
                + (f" ({tags['rollback_reason']})" if tags.get("rollback_reason") else "")
                + f"; to promote it again, name it: --version {found}")
        return found
    text = str(version).strip()
    if text.lstrip("+").isdigit() and int(text) >= 2**63:
        # Past what a registry numbers (SQLite's integer): asked, the store raised an error
        # of its own, read as a registry fault.
        raise PromotionError(f"{name} has no version {version}: check the registry "
                             "(mlflow ui, Models tab)")
    try:
        found_version = tracking.client().get_model_version(name, text)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise PromotionError(f"{name} has no version {version}: check the registry "
                                 "(mlflow ui, Models tab)") from exc
        why = tracking.redact(exc.message)
        raise RegistryError(f"could not read {name} version {version} from the MLflow "
                            f"registry at {tracking.display_uri()}: {why}") from exc
    # As the registry numbers it: "01" or "+1" finds version 1, and must compare equal to it.
    return str(found_version.version)


def apply_promotion(decision: PromotionDecision, force: bool = False, reason: str = "",
                    by: str | None = None) -> PromotionDecision:
    """Move the aliases if the decision passed (or ``force``), and log everything.

    ``champion`` moves to the candidate; the outgoing champion keeps ``previous-champion``.
    The candidate version's tags record the decision, who, when and why.

    Raises:
        ConfigError: ``force`` without a reason.
        PromotionError: The candidate is already the champion.
        PromotionRefused: The decision failed and ``force`` was not given (the attempt is
            still recorded in the candidate's tags).
    """
    if force and not reason.strip():
        raise ConfigError("--force needs --reason TEXT: say why the gate is overridden")
    if decision.champion_version == decision.candidate_version:
        raise PromotionError(f"{decision.name} version {decision.candidate_version} is "
                             "already the champion")
    current = alias_version(decision.name, CHAMPION)
    if current != decision.champion_version:
        # The comparison took minutes; a nightly run or a person moved champion meanwhile.
        raise PromotionError(f"{decision.name}'s champion moved from version "
                             f"{decision.champion_version} to {current} while the comparison "
                             "ran; run the promotion again")
    # Files first, forced or not: --force overrides the comparison, not a model that
    # cannot load.
    _check_files(decision.name, decision.candidate_version)
    decision.actor = by or actor()
    decision.at = now()
    decision.reason = reason.strip()
    client = tracking.client()
    name, version = decision.name, decision.candidate_version
    tags = {"promotion_decision": "pass" if decision.passed else "fail",
            "promotion_checked_at": decision.at, "promotion_checked_by": decision.actor,
            "promotion_report": decision.why}
    if not decision.passed and not force:
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value[:5000])
        raise PromotionRefused(decision)
    decision.forced = not decision.passed
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value[:5000])
    # Set once champion has moved (a promotion that failed must not read as one made), by
    # move_champion, which finishes them after a stop too.
    promoted = {"promoted_at": decision.at, "promoted_by": decision.actor,
                "promotion_forced": str(decision.forced).lower(),
                "promotion_reason": decision.reason}
    # The training wrote "gate not passed" in the description when the version stayed
    # challenger; left alone, that would read as the verdict on the version now serving.
    how = "promoted (forced)" if decision.forced else "promoted"
    line = (f"{how} to champion by {decision.actor} at {decision.at}: {decision.why}"
            + (f"; reason: {decision.reason}" if decision.reason else ""))
    move_champion(name, version, decision.champion_version, "promote", decision.actor,
                  decision.reason, decision.at, version_tags=promoted, description=line,
                  forced=decision.forced, decision=decision.why)
    decision.promoted = True
    return decision


def rollback(name: str, reason: str = "", by: str | None = None) -> dict[str, Any]:
    """Point ``champion`` back at ``previous-champion``.

    The rolled-back version keeps its history in tags; ``previous-champion`` is removed, so
    a second rollback has nowhere to go rather than flipping back to the bad version.

    The rollback is recorded (:data:`PENDING_ROLLBACK`) before champion moves. One that
    stopped after the move (a server gone, a process killed) is finished by the next call,
    with the versions, person, time and reason it recorded, rather than "rolling back" the
    restored version onto itself.

    Returns:
        ``{"name", "from", "to", "by", "at", "reason", "resumed"}``; ``resumed`` is true
        when an interrupted rollback was finished.

    Raises:
        PromotionError: There is no previous champion, or it is the champion already.
    """
    client = tracking.client()
    finish_interrupted_move(name)
    # A promotion or another rollback under way: crossed, the two left the registry wrong
    # (champion on the promoted version, previous-champion gone; a reason dropped and the
    # log written twice).
    refuse_while_busy(client, name)
    record, resumed = _rollback_plan(client, name, reason, by)
    if not resumed:
        _check_files(name, record["to"])
    # Recorded (or, resumed, taken over) as this process's before anything moves: another
    # operation then sees it under way.
    client.set_registered_model_tag(name, PENDING_ROLLBACK, record_text(
        {**record, "owner": operation_owner(), **({"taken_at": now()} if resumed else {})}))
    refuse_while_busy(client, name, own=PENDING_ROLLBACK,
                      restore=record_text(record) if resumed else None)
    if resumed:
        logger.warning("%s: finishing the rollback from version %s to %s begun at %s",
                       name, record["from"], record["to"], record["at"])
    else:
        set_alias(client, name, CHAMPION, record["to"])
    was, restored, who, at = record["from"], record["to"], record["by"], record["at"]
    why = record["reason"]
    # A resumed rollback writes only what the stopped one had not.
    logged = ({(m.get("alias"), m.get("to")) for m in alias_log(name) if m.get("at") == at}
              if resumed else set())
    because = f": {why}" if why else ""
    if was is not None and version_exists(client, name, was):  # deleted by hand since: no tags
        for key, value in {"rolled_back_at": at, "rolled_back_by": who,
                           "rollback_reason": why}.items():
            client.set_model_version_tag(name, was, key, value[:5000])
        # The Models tab shows the description first: it said "promoted to champion".
        describe(client, name, was, f"rolled back (champion back to version {restored}) "
                                    f"by {who} at {at}{because}")
    client.set_model_version_tag(name, restored, "restored_at", at)
    describe(client, name, restored,
             f"restored to champion by {who} at {at} (rollback from version {was}){because}")
    if (CHAMPION, restored) not in logged:
        log_alias_move(name, CHAMPION, was, restored, "rollback", who, why, at)
    # Last: while it stands, a rollback that stopped can be told from one not begun.
    if alias_version(name, PREVIOUS_CHAMPION) is not None:
        client.delete_registered_model_alias(name, PREVIOUS_CHAMPION)
    if (PREVIOUS_CHAMPION, None) not in logged:
        log_alias_move(name, PREVIOUS_CHAMPION, restored, None, "rollback", who, why, at)
    client.delete_registered_model_tag(name, PENDING_ROLLBACK)
    return {"name": name, "from": was, "to": restored, "by": who, "at": at, "reason": why,
            "resumed": resumed}


def check_rollback(name: str) -> None:
    """Refuse, before a flow starts, a rollback that would have nothing to do.

    Raises:
        PromotionError: As :func:`rollback` would.
    """
    finish_interrupted_move(name)  # a promotion stopped midway may have left previous wrong
    refuse_while_busy(tracking.client(), name)
    record, _ = _rollback_plan(tracking.client(), name)
    _check_files(name, record["to"])


def _check_files(name: str, version: str) -> None:
    """Refuse to point champion at a version whose files are gone (it could not load).

    After a move of the installation, a rollback to such a version said nothing, and every
    later batch and server start failed.
    """
    from shoprec.registry.loading import check_model_files

    check_model_files(name, version)


def _rollback_plan(client: Any, name: str, reason: str = "",
                   by: str | None = None) -> tuple[dict[str, Any], bool]:
    """What :func:`rollback` does: ``(record, resumed)``.

    An interrupted rollback is resumed when champion is the version it restored and
    ``previous-champion`` is that version too, or gone (the two states it can stop in);
    a record left by one that stopped earlier, and overtaken since by other moves, is not.

    Raises:
        PromotionError: Nothing to roll back to.
    """
    current = alias_version(name, CHAMPION)
    previous = alias_version(name, PREVIOUS_CHAMPION)
    pending = _pending_rollback(client, name)
    if (pending is not None and current is not None and current == pending["to"]
            and previous in (current, None)):
        return pending, True
    if previous is None:
        if current is None and not _model_exists(client, name):
            raise PromotionError(f"there is no registered model named {name!r} in the MLflow "
                                 f"registry at {tracking.display_uri()}: check the name")
        raise PromotionError(f"{name} has no '{PREVIOUS_CHAMPION}' alias: nothing to roll "
                             "back to (it is set when a promotion replaces a champion)")
    if previous == current:
        raise PromotionError(
            f"{name}'s '{PREVIOUS_CHAMPION}' is version {current}, the champion itself: an "
            "operation stopped midway left them so. Nothing to roll back to; delete the "
            f"'{PREVIOUS_CHAMPION}' alias in MLflow, or promote another version")
    if current is not None:
        from shoprec.registry.demand import is_forecast_version

        kinds = {v: "demand forecast" if is_forecast_version(name, v) else "recommender"
                 for v in (previous, current)}
        if kinds[previous] != kinds[current]:
            # Set by hand in the UI, or a forecast registered under a recommender's name:
            # the server would then answer every request with an error.
            raise PromotionError(
                f"{name}'s '{PREVIOUS_CHAMPION}' is version {previous}, a {kinds[previous]}, "
                f"while the champion (version {current}) is a {kinds[current]}: rolling back "
                f"would serve the wrong kind of model. Point '{PREVIOUS_CHAMPION}' at a "
                f"{kinds[current]} version in MLflow, or promote one")
    return {"from": current, "to": previous, "by": by or actor(), "at": now(),
            "reason": reason}, False


def _model_exists(client: Any, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


def _pending_rollback(client: Any, name: str) -> dict[str, Any] | None:
    """The rollback recorded under way for ``name``, if any (see :func:`rollback`)."""
    from mlflow.exceptions import MlflowException

    try:
        text = client.get_registered_model(name).tags.get(PENDING_ROLLBACK)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None  # no such model: nothing under way, and nothing to roll back
        raise
    if not text:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) and record.get("to") else None


def compare_with_champion(name: str, version: str | None, encoded: EncodedSplit,
                          items: pd.DataFrame | None, ks: list[int], primary: str,
                          margin: float = 0.0, threads: int | None = None) -> PromotionDecision:
    """Compare ``version`` (default: the challenger) with the champion like for like.

    Both versions' recipes are retrained on ``encoded``'s training split and scored on its
    validation and test users (:func:`shoprec.training.retrain_recipe`), the rule of the
    training gate: neither has then seen the test period. When a recipe is missing (a
    version registered before recipes) or cannot be retrained on this data, the decision
    fails with that reason, which a person may still override with ``force``.

    Raises:
        PromotionError: No such version, or no challenger.
        RegistryError: The registry could not be read.
    """
    from shoprec.training import retrain_recipe

    candidate_version = resolve_candidate(name, version)
    champion_version = alias_version(name, CHAMPION)
    if champion_version is None or champion_version == candidate_version:
        why = ("there is no champion yet" if champion_version is None else
               f"version {candidate_version} is already the champion")
        return PromotionDecision(name, candidate_version, champion_version, primary, margin,
                                 True, why, basis="nothing to compare with")
    foreign = _data_refused(name, candidate_version, champion_version) or _foreign_data(
        name, encoded, {"candidate": candidate_version, "champion": champion_version})
    if foreign:
        return PromotionDecision(name, candidate_version, champion_version, primary, margin,
                                 False, foreign, basis="no comparison")
    recipes, problems = {}, []
    for role, which in (("candidate", candidate_version), ("champion", champion_version)):
        recipe = read_recipe(name, which)
        if recipe is None:
            problems.append(f"the {role}: {why_no_recipe(name, which)}")
        else:
            recipes[role] = recipe
    if not problems:
        rows = {role: retrain_recipe(recipe, encoded, items, ks, threads, label=role)
                for role, recipe in recipes.items()}
        problems = [f"the {role}'s recipe {recipes[role].describe()} could not be retrained "
                    f"on the latest data: {row.error}"
                    for role, row in rows.items() if row.status != "ok"]
    if problems:
        return PromotionDecision(
            name, candidate_version, champion_version, primary, margin, False,
            "cannot compare like for like: " + "; ".join(problems),
            basis="no comparison")
    decision = decide(name, candidate_version, champion_version, rows["candidate"].test,
                      rows["champion"].test, primary, margin)
    decision.basis = (f"version {candidate_version}'s recipe {recipes['candidate'].describe()} "
                      f"vs champion version {champion_version}'s recipe "
                      f"{recipes['champion'].describe()}, both retrained on the latest "
                      "data's training split")
    decision.basis += other_metric_note(name, [candidate_version, champion_version], primary)
    return decision


def _data_refused(name: str, candidate: str, champion: str) -> str:
    """Why ``candidate``'s own gate found its data unlike ``champion``'s, or ``""``.

    A reader's: a version trained on another shop's data, kept challenger by its gate
    (shoppers ~0% in common), became champion through a plain `promote`, whose catalogue
    comparison could not judge two catalogues that far apart in size.
    """
    from shoprec.registry.publish import GATE_CHAMPION_TAG, GATE_DATA_TAG

    tags = tracking.client().get_model_version(name, candidate).tags or {}
    failed = tags.get(GATE_DATA_TAG, "")
    if not failed or tags.get(GATE_CHAMPION_TAG) != champion:
        return ""  # passed, recorded before the tag, or judged against another champion
    return (f"version {candidate}'s own gate found its data unlike champion version "
            f"{champion}'s ({failed.replace(',', ', ')} failed: see its gate_checks tag); "
            "after a deliberate change (another catalogue, a CRM migration, a shorter "
            "window), promote it with --force and the reason")


def _foreign_data(name: str, encoded: EncodedSplit | None, versions: dict[str, str]) -> str:
    """Why this data cannot judge the versions (another shop's items), or ``""``.

    Both recipes retrained on data that shares no items with what they served compare
    nothing about the shop: ``promote`` left to its default data (the bundled sample)
    decided a shop's promotion on another shop's sales.
    """
    from shoprec.registry.publish import MIN_CATALOGUE_OVERLAP

    if encoded is None:
        return ""
    sketch = catalogue_sketch(encoded.items.ids)
    for role, which in versions.items():
        overlap = sketch_overlap(sketch, read_catalogue(name, which))
        if overlap is not None and overlap < MIN_CATALOGUE_OVERLAP:
            return (f"the data given and the {role}, version {which}, share about "
                    f"{overlap:.0%} of the smaller catalogue's items: another shop's data, "
                    "or a catalogue replaced since (without --interactions the bundled "
                    "sample is used); pass the data this model is trained on "
                    "(--interactions, --items), or --force with the reason")
    return ""


def other_metric_note(name: str, versions: list[str], primary: str) -> str:
    """``; note: ...`` naming the versions gated on another metric than ``primary``, or ``""``.

    A version trained and gated on recall@20 is judged by a promotion on ndcg@10 unless
    the person passes --primary-metric: they should know.
    """
    gated = {which: (tracking.client().get_model_version(name, which).tags or {}).get(
        "primary_metric") for which in versions}
    others = [f"version {v} on {m}" for v, m in gated.items() if m and m != primary]
    if not others:
        return ""
    return (f"; note: {', '.join(others)} {'was' if len(others) == 1 else 'were'} gated on "
            f"another metric than this decision's {primary} (--primary-metric)")
