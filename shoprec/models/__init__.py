"""Model families behind the Recommender interface, and the candidate registry."""

from __future__ import annotations

from typing import Any

from shoprec.errors import ConfigError
from shoprec.models.again import BuyAgain
from shoprec.models.autoencoder import EASE, MultDAE, MultVAE
from shoprec.models.base import FitContext, Recommender
from shoprec.models.blend import Blend
from shoprec.models.content import ContentRecommender
from shoprec.models.gan import CFGAN
from shoprec.models.mf import ImplicitALS, RatingsMF
from shoprec.models.popularity import Popularity

#: Candidate name -> model class. Every candidate name is unique across families.
CANDIDATES: dict[str, type[Recommender]] = {
    Popularity.name: Popularity,
    ImplicitALS.name: ImplicitALS,
    RatingsMF.name: RatingsMF,
    ContentRecommender.name: ContentRecommender,
    EASE.name: EASE,
    MultVAE.name: MultVAE,
    MultDAE.name: MultDAE,
    CFGAN.name: CFGAN,
    BuyAgain.name: BuyAgain,
    # Built from the others after they trained (TrainingConfig.blend), never a --models name.
    Blend.name: Blend,
}


def make_model(name: str, params: dict[str, Any] | None = None) -> Recommender:
    """Build the candidate ``name`` with hyperparameters ``params``.

    Raises:
        ConfigError: Unknown candidate or hyperparameter.
    """
    if name not in CANDIDATES:
        raise ConfigError(f"unknown model {name!r}; choose from {', '.join(CANDIDATES)}")
    checked = _check_ranges(name, params or {})
    try:
        return CANDIDATES[name](**checked)
    except TypeError as exc:
        raise ConfigError(f"bad hyperparameters for {name}: {exc}") from exc


def _check_ranges(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` read as the command line reads them: values outside the ranges refused.

    ``make_model("mf", {"factors": 0})`` printed 64,785 lines of BLAS errors and returned a
    "fitted" model. The declared values come back in their declared types (``"8"``, as
    MLflow keeps a run's parameters, is 8); values the declaration does not name are left
    to the constructor (a family's own settings, such as a blend's members).

    Raises:
        ConfigError: A declared value outside its range or of another kind.
    """
    from pydantic import ValidationError

    from shoprec.config import CandidateParams

    try:
        schema = CandidateParams.schema_of(name)
    except KeyError:
        return dict(params)  # a family without a declaration (the blend, one being added)
    declared = {key: value for key, value in params.items() if key in schema.model_fields}
    try:
        read = schema.model_validate(declared)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors())
        raise ConfigError(f"bad hyperparameters for {name}: {problems}") from None
    return {**params, **{key: getattr(read, key) for key in declared}}


def load_model(path: str, name: str) -> Recommender:
    """Load a saved candidate ``name`` from ``path``.

    Raises:
        ConfigError: Unknown candidate name, or the folder holds another candidate.
    """
    if name not in CANDIDATES:
        raise ConfigError(f"unknown model {name!r}; choose from {', '.join(CANDIDATES)}")
    import json
    from pathlib import Path

    config = Path(path) / "config.json"
    try:
        saved = json.loads(config.read_text(encoding="utf-8")).get("name")
    except (OSError, ValueError, AttributeError):
        saved = None  # the family's own loader says what is wrong with the folder
    if saved and saved != name:
        raise ConfigError(f"{path} holds a saved {saved} model, not {name}; load it as "
                          f"load_model(path, {saved!r})")
    return CANDIDATES[name].load(path)


__all__ = [
    "Blend",
    "BuyAgain",
    "CANDIDATES",
    "CFGAN",
    "ContentRecommender",
    "EASE",
    "FitContext",
    "ImplicitALS",
    "Popularity",
    "RatingsMF",
    "Recommender",
    "MultDAE",
    "MultVAE",
    "load_model",
    "make_model",
]
