"""Model families behind the Recommender interface, and the candidate registry."""

from __future__ import annotations

from typing import Any

from shoprec.errors import ConfigError
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
    try:
        return CANDIDATES[name](**(params or {}))
    except TypeError as exc:
        raise ConfigError(f"bad hyperparameters for {name}: {exc}") from exc


def load_model(path: str, name: str) -> Recommender:
    """Load a saved candidate ``name`` from ``path``."""
    return CANDIDATES[name].load(path)


__all__ = [
    "Blend",
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
