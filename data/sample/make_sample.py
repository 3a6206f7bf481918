"""Rebuild the bundled sample from the full UCI Online Retail file.

    python data/sample/make_sample.py ../shared/data/online_retail.csv.gz

Keeps every line (dirty ones included) of a seeded random share of customers and of guest
invoices, so the sample has the real data's shape: cancellations, non-products, guests.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

CUSTOMER_SHARE = 0.3
GUEST_INVOICE_SHARE = 0.05
SEED = 20111209


def main(source: str, target: Path) -> None:
    """Write the sample of ``source`` to ``target`` (gzip CSV, original layout)."""
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    rng = np.random.default_rng(SEED)
    customers = np.sort(frame.loc[frame["CustomerID"] != "", "CustomerID"].unique())
    chosen = set(rng.choice(customers, size=int(len(customers) * CUSTOMER_SHARE), replace=False))
    guests = np.sort(frame.loc[frame["CustomerID"] == "", "InvoiceNo"].unique())
    guest_invoices = set(rng.choice(guests, size=int(len(guests) * GUEST_INVOICE_SHARE),
                                    replace=False))
    keep = frame["CustomerID"].isin(chosen) | (
        (frame["CustomerID"] == "") & frame["InvoiceNo"].isin(guest_invoices))
    sample = frame[keep]
    sample.to_csv(target, index=False, compression={"method": "gzip", "mtime": 0})
    print(f"{len(sample):,} rows, {sample['CustomerID'].nunique():,} customer ids, "
          f"{target.stat().st_size / 1e6:.2f} MB -> {target}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/online_retail.csv.gz",
         Path(__file__).with_name("online_retail_sample.csv.gz"))
