"""Benchmark helper: how fast the machine is at this moment.

    .venv/bin/python benchmarks/probe.py          # e.g. "0.81 0.83 0.98"

The same 2-core machine has run the same code up to about twice as slow from one hour to the
next (``benchmarks/RESULTS.md``, twenty-sixth session), so a wall time means little without
the machine's speed beside it. The probe times a fixed piece of arithmetic, forty products of
a 1,500 x 1,500 float32 matrix, three times, with NumPy's BLAS on every core as the
networks' and ease's products run; lower is faster (0.7-0.9 s in the machine's fast hours,
up to 2.1 s in its slow ones). ``benchmarks/retail.py`` (and so ``benchmarks/scale.py``)
prints it before and after the run it times, outside the timed run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

#: Matrix side, products per timing and timings: the figures the session notes quote.
SIZE, PRODUCTS, REPEATS = 1500, 40, 3


def probe(size: int = SIZE, products: int = PRODUCTS, repeats: int = REPEATS) -> list[float]:
    """Seconds of ``products`` products of a ``size`` x ``size`` float32 matrix, ``repeats`` times.

    Args:
        size: The square matrix's side.
        products: Products timed together.
        repeats: Timings taken one after another; the spread shows whether the machine's
            speed moved while it was measured.

    Returns:
        One figure per repeat, in seconds, rounded to 0.01.
    """
    if min(size, products, repeats) < 1:
        raise ValueError("size, products and repeats must be at least 1")
    # A fixed seed: the same values every time, so only the machine's speed varies.
    matrix = np.random.default_rng(0).random((size, size), dtype=np.float32)
    seconds = []
    for _ in range(repeats):
        began = time.perf_counter()
        for _ in range(products):
            matrix @ matrix
        seconds.append(round(time.perf_counter() - began, 2))
    return seconds


def describe(seconds: list[float]) -> str:
    """The figures as the notes quote them: ``"0.81 0.83 0.98"``."""
    return " ".join(f"{s:.2f}" for s in seconds)


def main() -> None:
    """Print one probe."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=SIZE)
    parser.add_argument("--products", type=int, default=PRODUCTS)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    args = parser.parse_args()
    try:
        print(describe(probe(args.size, args.products, args.repeats)))
    except ValueError as exc:
        parser.error(str(exc))


if __name__ == "__main__":
    main()
