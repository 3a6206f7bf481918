"""A registered version's *recipe*: what it takes to train that model again on other data.

Every version records, as tags, its candidate (family and name), the hyperparameters
chosen on validation, the event weighting, the cutoff and fingerprint of the data it was
refit on and the code version. The champion comparison retrains the champion's recipe on
the current run's training split and scores it on the same validation and test users as
the challenger: both have then seen the same data and neither the test period, which a
champion refit on all data of an earlier run may have (scoring that refit on a later test
split would compare it on events it was trained on).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from shoprec.errors import RegistryError
from shoprec.registry import tracking
from shoprec.registry.aliases import CHAMPION, alias_version

if TYPE_CHECKING:
    from shoprec.config import WeightingConfig

logger = logging.getLogger(__name__)

RECIPE_TAG = "recipe"
#: Execution settings, not part of what a model is: the retrain uses its own share of cores.
EXECUTION_PARAMS = ("threads",)


def param_text(value: Any) -> str:
    """A hyperparameter's value as ``--param`` takes it (a tuple and its JSON list alike)."""
    return json.dumps(value, separators=(",", ":"), default=str)


#: The grid a value left open is chosen from, where it is not ``<name>_grid``.
_GRIDS = {"similarity_exponent": "exponent_grid", "popularity_smoothing": "smoothing_grid"}
#: Values a fit chooses without a grid (early stopping's epochs, the reading power):
#: never someone's own.
_CHOSEN_IN_FIT = ("epochs", "history_weights")


@dataclass
class Recipe:
    """How a registered version was trained.

    Attributes:
        candidate: Candidate name (``ease``, ``mf``...).
        params: Its hyperparameters as trained, with the values chosen on validation.
        weighting: The event weighting of its training matrix.
        data_cutoff: Latest interaction time of the data it was refit on (UTC, ISO 8601).
        data_fingerprint: The data's identity (:func:`shoprec.pipeline.data_fingerprint`:
            SHA-256 over the reading options, each input file's name and its bytes; no
            plain checksum of the file: `shoprec validate` prints it).
        code_version: The git commit of the code that trained it.
    """

    candidate: str
    params: dict[str, Any] = field(default_factory=dict)
    weighting: dict[str, Any] = field(default_factory=dict)
    data_cutoff: str | None = None
    data_fingerprint: str | None = None
    code_version: str | None = None

    def training_params(self, threads: int | None = None) -> dict[str, Any]:
        """The hyperparameters to train it with, on ``threads`` cores where it takes them."""
        return _for_this_machine(self.candidate, self.params, threads)

    def describe(self) -> str:
        """``ease (regularization=200.0)``: the candidate and its chosen and given values.

        Any value that is not its family's default is said beside the chosen ones: two mf
        recipes of 64 and 32 factors both read "mf (regularization=10.0)", and a
        comparison of configurations read as noise.
        """
        chosen = {k: v for k, v in self.params.items()
                  if k in ("regularization", "popularity_smoothing", "similarity_exponent",
                           "epochs")
                  or (k == "history_weights" and v)}
        chosen.update({k: v for k, v in sorted(self.own_values().items())
                       if k not in chosen})
        inner = ", ".join(f"{k}={v}" for k, v in chosen.items())
        return f"{self.candidate} ({inner})" if inner else self.candidate

    def own_values(self) -> dict[str, Any]:
        """The hyperparameters someone gave.

        Neither the family's default nor a value its grid chose (one left open and found
        in the grid).
        """
        from shoprec.config import CandidateParams

        try:
            defaults = CandidateParams().of(self.candidate)
        except KeyError:
            return {}

        def chosen_on_grid(name: str, value: Any) -> bool:
            field = _GRIDS.get(name, f"{name}_grid")
            grid = self.params.get(field, defaults.get(field))
            if defaults[name] is not None or not isinstance(grid, (list, tuple)) or not grid:
                return False
            # A family that refines its grid (mf: 31.62 between 10 and 100) chose a value
            # inside the grid's range.
            refines = self.params.get("refine_steps", defaults.get("refine_steps")) or 0
            inside = isinstance(value, (int, float)) and min(grid) <= value <= max(grid)
            return value in grid or bool(refines and inside)

        return {k: v for k, v in self.params.items() if k in defaults and v is not None
                and k not in _CHOSEN_IN_FIT and param_text(v) != param_text(defaults[k])
                and not chosen_on_grid(k, v)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the run summary)."""
        return json.loads(json.dumps(asdict(self), default=_plain))

    def to_tags(self) -> dict[str, str]:
        """Version tags: the whole recipe as JSON, and the cutoff on its own for the UI."""
        return {RECIPE_TAG: json.dumps(asdict(self), default=_plain, sort_keys=True),
                "data_cutoff": self.data_cutoff or ""}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> Recipe | None:
        """The recipe recorded in a version's tags, or ``None`` if it has none."""
        text = tags.get(RECIPE_TAG)
        if not text:
            return None
        try:
            return cls(**json.loads(text))
        except (TypeError, ValueError) as exc:
            logger.warning("unreadable recipe tag %r: %s", text[:200], exc)
            return None


@dataclass
class ChampionReference:
    """The champion a new version is compared with.

    Attributes:
        version: The champion's version, ``None`` when the alias is not set.
        recipe: Its recipe, when recorded.
        error: Why it cannot be compared (registry unreadable, no recipe); ``None`` if it
            can, or if there is no champion.
    """

    version: str | None = None
    recipe: Recipe | None = None
    error: str | None = None
    catalogue: CatalogueSketch | None = field(default=None, repr=False)
    #: Its shoppers' sketch, and its items' with their titles (:class:`DataSketches`).
    shoppers: CatalogueSketch | None = field(default=None, repr=False)
    titled: CatalogueSketch | None = field(default=None, repr=False)
    #: Its data's first interaction time (:attr:`DataSketches.start`).
    data_start: str | None = None
    #: The test users its own gate judged it on (``None``: not recorded).
    test_users: int | None = None
    #: Whether it was trained counting reorders (``--repeat-items``; ``None``: unknown).
    repeat_items: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the run summary), without the sketches."""
        return {k: v for k, v in asdict(self).items()
                if k not in ("catalogue", "shoppers", "titled")}


#: Version tag holding the :class:`CatalogueSketch` of the data the version was trained on.
CATALOGUE_TAG = "catalogue_sketch"
#: Ids kept in a sketch: enough to tell a shop's next night, or its catalogue grown many
#: times over, from another shop, in a tag of under 3 KB (version tags hold 5,000).
SKETCH_SIZE = 256
#: The fewest ids two sketches must be compared on for an estimate.
MIN_COMPARED = 16


@dataclass(frozen=True)
class CatalogueSketch:
    """A catalogue's size and a bottom-k sketch of its ids (:data:`SKETCH_SIZE` hashes).

    Two sketches estimate how many items two catalogues share without either being stored:
    the hashes are of the ids, 10 hex digits each.

    Attributes:
        size: Items in the catalogue.
        hashes: The smallest of its ids' SHA-256 hashes, sorted.
    """

    size: int
    hashes: tuple[str, ...]

    def to_tag(self) -> str:
        """``SIZE:HASH,HASH,...``, the tag's value."""
        return f"{self.size}:{','.join(self.hashes)}"

    @classmethod
    def from_tag(cls, text: str | None) -> CatalogueSketch | None:
        """The sketch a tag holds; ``None`` for none, or one that cannot be read."""
        size, _, hashes = (text or "").partition(":")
        if not size.isdigit() or not hashes:
            return None
        return cls(int(size), tuple(h for h in hashes.split(",") if h))


def catalogue_sketch(item_ids: Any) -> CatalogueSketch:
    """The :class:`CatalogueSketch` of a set of item ids (or of any ids: shoppers')."""
    import hashlib
    import heapq

    sha = hashlib.sha256
    hashes = {sha(str(i).encode()).hexdigest()[:10] for i in item_ids}
    # The smallest alone: sorting a million shoppers' hashes took most of a second.
    return CatalogueSketch(len(hashes), tuple(heapq.nsmallest(SKETCH_SIZE, hashes)))


#: Version tags of the shoppers' sketch and of the items-with-titles sketch.
SHOPPERS_TAG = "shoppers_sketch"
TITLED_TAG = "titled_catalogue_sketch"
#: Version tag of the first interaction time of the data (beside the recipe's cutoff):
#: with the cutoff, the period the data spans.
START_TAG = "data_start"
#: Version tag: the test users its gate judged it on.
TEST_USERS_TAG = "gate_test_users"


@dataclass(frozen=True)
class DataSketches:
    """What a version records of the data it was trained on, without storing any of it.

    Attributes:
        items: Its items' ids (:data:`CATALOGUE_TAG`).
        shoppers: Its shoppers' ids (:data:`SHOPPERS_TAG`): a night whose shoppers were
            re-numbered (a new CRM) shares none of them; one cut short holds few.
        titled: Its items' ids with their titles (:data:`TITLED_TAG`), when most items
            have one: two shops numbering their products alike share ids, not titles.
        start: Its first interaction time (UTC, ISO 8601; :data:`START_TAG`): a quiet
            month holds fewer shoppers over as many days, an export cut short fewer days.
    """

    items: CatalogueSketch
    shoppers: CatalogueSketch | None = None
    titled: CatalogueSketch | None = None
    start: str | None = None

    def to_tags(self) -> dict[str, str]:
        """The version tags that hold the sketches."""
        return {CATALOGUE_TAG: self.items.to_tag(),
                **({SHOPPERS_TAG: self.shoppers.to_tag()} if self.shoppers else {}),
                **({TITLED_TAG: self.titled.to_tag()} if self.titled else {}),
                **({START_TAG: self.start} if self.start else {})}


def titled_sketch(item_ids: Any, titles: Any) -> CatalogueSketch | None:
    """The sketch of items with their titles (read in search's one form).

    ``None`` when under half the items have a title: nothing tells two shops apart then.
    """
    from shoprec.features.text import fold_text

    named = [(str(i), " ".join(fold_text(str(t)).split())) for i, t in zip(item_ids, titles,
                                                                          strict=True)
             if isinstance(t, str) and t.strip()]
    ids = {str(i) for i in item_ids}
    if not ids or len(named) < 0.5 * len(ids):
        return None
    return catalogue_sketch(f"{i}\x1f{t}" for i, t in named)


def sketch_overlap(first: CatalogueSketch | None, second: CatalogueSketch | None
                   ) -> float | None:
    """The share of the smaller catalogue's items the larger one holds too, estimated.

    A bottom-k sketch holds every id of its catalogue whose hash is at most its largest
    one. So the smaller catalogue's sampled ids up to the larger sketch's largest hash are
    a sample of it whose membership in the larger catalogue can be read: a shop grown from
    300 items to 4,000 shares all of the 300 (Jaccard read 0.078 and failed it), another
    shop none. ``None`` when either is missing, or fewer than :data:`MIN_COMPARED` ids can
    be compared (one catalogue tens of times the other's size).
    """
    if not first or not second or not first.hashes or not second.hashes:
        return None
    small, large = sorted((first, second), key=lambda sketch: sketch.size)
    complete = large.size <= len(large.hashes)  # the sketch is the whole catalogue
    edge = large.hashes[-1]
    comparable = [h for h in small.hashes if complete or h <= edge]
    if len(comparable) < min(MIN_COMPARED, len(small.hashes)):
        return None  # a handful of ids decides nothing (a false "another shop" 13 in 200)
    held = set(large.hashes)
    return sum(1 for h in comparable if h in held) / len(comparable)


def read_recipe(name: str, version: str) -> Recipe | None:
    """The recipe of ``name`` version ``version``; ``None`` if it records none.

    Raises:
        RegistryError: The registry could not be read, or the version does not exist.
    """
    return Recipe.from_tags(_version_tags(name, version))


def _version_tags(name: str, version: str) -> dict[str, str]:
    """The tags of ``name`` version ``version``.

    Raises:
        RegistryError: The registry could not be read, or the version does not exist.
    """
    try:
        return tracking.client().get_model_version(name, str(version)).tags or {}
    except Exception as exc:  # any client failure is a registry fault
        why = tracking.redact(str(exc))
        raise RegistryError(f"could not read {name} version {version} from the MLflow "
                            f"registry at {tracking.display_uri()}: {why}") from exc


def why_no_recipe(name: str, version: str) -> str:
    """Why ``name`` version ``version`` records no recipe, as a person can act on it.

    A demand forecast (set as the alias by hand, or registered under this name), a version
    no shoprec training labelled (registered by hand, or left by a stopped run), or one
    registered before shoprec recorded recipes.
    """
    from shoprec.registry.demand import KIND, KIND_TAG

    try:
        tags = tracking.client().get_model_version(name, str(version)).tags or {}
    except Exception:  # noqa: BLE001 - the reason is a courtesy; the refusal stands
        tags = {"gate": ""}
    if tags.get(KIND_TAG) == KIND:
        return (f"version {version} is a demand forecast, not a recommender (forecasts go to "
                "their own registered model, shoprec-demand)")
    if "gate" not in tags:
        return (f"version {version} was not published by a shoprec training (no 'gate' tag: "
                "registered by hand, or left by a run that stopped)")
    return (f"version {version} has no readable recipe tag (it was registered before "
            "shoprec recorded recipes)")


def recorded_weighting(name: str, version: str) -> WeightingConfig:
    """The event weighting ``name`` version ``version`` was trained with (its recipe).

    Returns:
        The recorded weighting (fields added since it was recorded at their defaults,
        which is how it was weighted); the default weighting when the version records
        no recipe or no weighting, or when the recorded one cannot be read (logged).

    Raises:
        RegistryError: The registry could not be read, or the version does not exist.
    """
    from pydantic import ValidationError

    from shoprec.config import WeightingConfig

    recipe = read_recipe(name, version)
    try:
        return WeightingConfig(**(recipe.weighting if recipe and recipe.weighting else {}))
    except ValidationError as exc:
        logger.warning("version %s's recorded weighting cannot be read (%s); the default "
                       "weighting is used", version, exc.errors()[0]["msg"])
        return WeightingConfig()


def champion_reference(name: str) -> ChampionReference:
    """The current champion of ``name`` and its recipe; never raises.

    Only an unset alias means "no champion". A registry that cannot be read, or a champion
    without a recipe, gives a reference with ``error`` set, which fails the gate.
    """
    try:
        version = alias_version(name, CHAMPION)
        if version is None:
            return ChampionReference()
        tags = _version_tags(name, version)  # the recipe and the catalogue, in one read
    except RegistryError as exc:
        return ChampionReference(error=str(exc))
    recipe = Recipe.from_tags(tags)
    if recipe is None:
        return ChampionReference(version, None, (
            f"the champion: {why_no_recipe(name, version)}, so it cannot be retrained for a "
            "like-for-like comparison; promote deliberately with `shoprec promote --force "
            "--reason TEXT`"))
    return ChampionReference(version, recipe,
                             catalogue=CatalogueSketch.from_tag(tags.get(CATALOGUE_TAG)),
                             shoppers=CatalogueSketch.from_tag(tags.get(SHOPPERS_TAG)),
                             titled=CatalogueSketch.from_tag(tags.get(TITLED_TAG)),
                             data_start=tags.get(START_TAG) or None,
                             test_users=_count(tags.get(TEST_USERS_TAG))
                             or _logged_test_users(name, version),
                             repeat_items=trained_with_repeat_items(name, version))


def _count(text: str | None) -> int | None:
    """A count recorded in a tag, ``None`` when absent or unreadable."""
    return int(text) if text and text.isdigit() else None


def trained_with_repeat_items(name: str, version: str) -> bool | None:
    """Whether ``version``'s training counted reorders (its run's ``split.repeat_items``).

    ``None`` when its run cannot be read or logged no split.
    """
    try:
        client = tracking.client()
        run_id = client.get_model_version(name, str(version)).run_id
        params = client.get_run(run_id).data.params if run_id else {}
    except Exception as exc:  # noqa: BLE001 - unknown: the gate compares as before
        logger.debug("no split logged for %s version %s: %s", name, version, exc)
        return None
    logged = params.get("split.repeat_items")
    return None if logged is None else str(logged).lower() == "true"


def _logged_test_users(name: str, version: str) -> int | None:
    """The test users logged with the run of a version registered before the tag existed.

    Without it, a shop stuck on a small first champion from before stayed stuck. ``None``
    when the run cannot be read or logged none.
    """
    try:
        client = tracking.client()
        run_id = client.get_model_version(name, str(version)).run_id
        logged = client.get_run(run_id).data.metrics.get("test_users") if run_id else None
    except Exception as exc:  # noqa: BLE001 - a hint only: the gate keeps its floor
        logger.debug("no test users logged for %s version %s: %s", name, version, exc)
        return None
    return int(logged) if logged is not None and logged > 0 else None


def read_catalogue(name: str, version: str) -> CatalogueSketch | None:
    """The catalogue sketch ``name`` version ``version`` records; ``None``: none, or unread.

    The sketch is a second look beside the comparison, so a registry fault here is logged,
    not raised (the comparison's own reads raise it).
    """
    try:
        tags = tracking.client().get_model_version(name, str(version)).tags or {}
    except Exception as exc:  # noqa: BLE001 - see above
        logger.warning("version %s's catalogue sketch cannot be read: %s", version,
                       tracking.redact(str(exc)))
        return None
    return CatalogueSketch.from_tag(tags.get(CATALOGUE_TAG))


def _plain(value: Any) -> Any:
    """JSON fallback for numpy scalars and tuples inside the parameters."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


def _for_this_machine(candidate: str, recorded: dict[str, Any],
                      threads: int | None) -> dict[str, Any]:
    """Recorded hyperparameters with today's names and this machine's thread counts.

    A blend's members are recorded inside its parameters: they get the same treatment.
    """
    from shoprec.models import CANDIDATES

    recorded = dict(recorded)
    if candidate in CANDIDATES:  # what an older version recorded, in today's terms
        recorded = CANDIDATES[candidate].current_params(recorded)
    params = {k: v for k, v in recorded.items() if k not in EXECUTION_PARAMS}
    if threads is not None:
        for key in EXECUTION_PARAMS:
            if key in recorded:
                params[key] = threads
    if isinstance(params.get("members"), list):
        params["members"] = [{**member, "params": _for_this_machine(
            member["name"], member.get("params") or {}, threads)}
            for member in params["members"]]
    return params
