"""What the per-family benchmarks fit on: Online Retail (or any file), split temporal 30/30.

Imported by ``benchmarks/explain.py`` and ``benchmarks/compression.py``.
"""

from __future__ import annotations

from typing import Any


def temporal_parts(interactions: str) -> tuple[Any, Any]:
    """The encoded temporal split and the item frame aligned with it (runtime defaults set)."""
    from shoprec.config import CleaningConfig, DataConfig, SplitConfig, WeightingConfig
    from shoprec.features import item_frame
    from shoprec.pipeline import prepare
    from shoprec.runtime import apply_runtime_defaults

    apply_runtime_defaults()
    prepared = prepare(DataConfig(interactions=interactions), CleaningConfig(),
                       SplitConfig(method="temporal"), WeightingConfig())
    encoded = prepared.encoded
    return encoded, item_frame(prepared.data.items, encoded.items)
