"""Benchmark: the demand forecast's boosting on 1 and 2 OpenMP threads, idle and beside work.

    .venv/bin/python benchmarks/forecast_threads.py                # the generator's set
    .venv/bin/python benchmarks/forecast_threads.py --retail       # Online Retail
    .venv/bin/python benchmarks/forecast_threads.py --busy 2       # beside 2 busy processes

Times :func:`shoprec.forecast.backtest` and :func:`shoprec.forecast.forecast_next` at each
``threads`` setting. ``--busy N`` starts N processes that spin on the CPU for the whole
measurement, as another process's training (or the other half of a two-process test run)
does; scikit-learn's OpenMP threads spin at the end of every parallel region, waiting for
a thread that is not running.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

RETAIL = Path(__file__).resolve().parents[2] / "shared" / "data" / "online_retail.csv.gz"


def _retail() -> pd.DataFrame:
    raw = pd.read_csv(RETAIL, encoding="latin-1",
                      usecols=["StockCode", "Quantity", "InvoiceDate", "CustomerID"])
    raw = raw[raw["Quantity"] > 0].dropna()
    return pd.DataFrame({
        "user_id": raw["CustomerID"].astype(str), "item_id": raw["StockCode"].astype(str),
        "event": "purchase", "value": raw["Quantity"].astype(float),
        "timestamp": pd.to_datetime(raw["InvoiceDate"]).dt.tz_localize("UTC")})


def _synthetic(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    from shoprec.data.synthetic import generate

    if not (folder / "interactions.parquet").exists():
        # The set of the tests' demand-forecast cases (tests/conftest.py's synthetic_dir).
        generate(folder, users=600, items=150, interactions=15_000, seed=7)
    return (pd.read_parquet(folder / "interactions.parquet"),
            pd.read_parquet(folder / "items.parquet"))


def main() -> None:
    """Print seconds of the backtest and of the forecast per thread count."""
    from shoprec.forecast import ForecastSettings, backtest, forecast_next, weekly_panel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retail", action="store_true", help="Online Retail, not synthetic")
    parser.add_argument("--busy", type=int, default=0, help="busy processes beside it")
    parser.add_argument("--threads", default="1,2", help="thread counts to time")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/shoprec-forecast-bench"))
    args = parser.parse_args()
    if args.retail:
        interactions, items, share = _retail(), None, 0.2
    else:
        (interactions, items), share = _synthetic(args.scratch), 0.5
    panel = weekly_panel(interactions, items, min_week_share=share)
    print(f"panel: {panel.units.shape[0]:,} products x {panel.units.shape[1]} weeks; "
          f"{args.busy} busy processes beside it", flush=True)
    # Started as programs of their own, as another job's would be: children forked from
    # this one (multiprocessing) slowed two threads far less (a backtest of 15.7 s against 196 s).
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(args.busy)]
    try:
        for threads in (int(t) for t in args.threads.split(",")):
            settings = ForecastSettings(threads=threads)
            began = time.perf_counter()
            backtest(panel, settings)
            middle = time.perf_counter()
            forecast_next(panel, settings)
            ended = time.perf_counter()
            print(f"threads={threads}: backtest {middle - began:.1f} s, "
                  f"forecast {ended - middle:.1f} s", flush=True)
    finally:
        for process in busy:
            process.kill()
            process.wait()


if __name__ == "__main__":
    main()
