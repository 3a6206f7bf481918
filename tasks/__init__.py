"""Prefect tasks: thin wrappers over one ``shoprec`` function each."""

from __future__ import annotations

import hashlib
import re


def artifact_key(base: str, model_name: str, default: str) -> str:
    """The Prefect artifact key ``base`` for the registered model ``model_name``.

    Two shops on one Prefect server would otherwise read each other's latest artifact under
    one key; the default model keeps the bare key. Prefect allows lower-case letters,
    digits and dashes in a key: a name that needs changing for it ("Shop A", "магазин")
    also gets 6 hex digits of its hash, so no two names share a key.
    """
    if model_name == default:
        return base
    slug = re.sub(r"[^a-z0-9]+", "-", model_name.lower()).strip("-")
    if slug == model_name:
        return f"{base}-{slug}"
    digest = hashlib.sha256(model_name.encode()).hexdigest()[:6]
    return f"{base}-{slug}-{digest}" if slug else f"{base}-{digest}"
