"""Prefect tasks: thin wrappers over one ``shoprec`` function each."""

from __future__ import annotations

import re


def artifact_key(base: str, model_name: str, default: str) -> str:
    """The Prefect artifact key ``base`` for the registered model ``model_name``.

    Two shops on one Prefect server would otherwise read each other's latest artifact under
    one key; the default model keeps the bare key. Prefect allows lower-case letters,
    digits and dashes in a key.
    """
    if model_name == default:
        return base
    slug = re.sub(r"[^a-z0-9]+", "-", model_name.lower()).strip("-")
    return f"{base}-{slug}" if slug else base
