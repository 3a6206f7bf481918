"""The one rule that lets a version replace the champion.

The training gate and ``shoprec promote`` both apply it, and both compare like for like:
the two recipes retrained on the same training split and scored on the same test users
(see :mod:`shoprec.registry.recipe`).
"""

from __future__ import annotations


def replaces_champion(value: float, champion: float, margin: float = 0.0) -> tuple[bool, float]:
    """Whether a primary-metric ``value`` may replace the champion's, and the bar it met.

    Args:
        value: The candidate's primary metric on test.
        champion: The champion recipe's primary metric on the same test users.
        margin: Relative margin over the champion (0: "no worse" wins, so a retrain of the
            same recipe on the same data, which ties, takes over).

    Returns:
        ``(passed, bar)`` with ``bar = champion * (1 + margin)`` and ``passed = value >= bar``.
    """
    bar = float(champion) * (1.0 + margin)
    return float(value) >= bar, bar


def shown_apart(*values: float) -> list[str]:
    """``values`` at 4 decimals, or with as many more as it takes to tell them apart.

    A check decided by a difference smaller than the printed precision would otherwise read
    "fail: 0.0933 vs 0.0933". Up to 8 decimals, then every digit (``repr``).
    """
    for places in range(4, 9):
        shown = [f"{float(v):.{places}f}" for v in values]
        if len(set(shown)) == len(set(float(v) for v in values)):
            return shown
    return [repr(float(v)) for v in values]  # apart by less: every digit


def factor(margin: float) -> str:
    """``1 + margin`` as a multiplier, every significant digit kept (``1.125``, not ``1.12``)."""
    return f"{1.0 + float(margin):.12g}"
