"""Small builders for test inputs."""

from __future__ import annotations

from pathlib import Path

RETAIL_HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"


def write(path: Path, text: str | bytes) -> Path:
    """Write ``text`` to ``path`` and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def canonical_csv(n_users: int = 12, n_items: int = 12, per_user: int = 4,
                  extra: list[str] | None = None) -> str:
    """A clean generic CSV where user u touched items u..u+per_user-1 (mod n_items)."""
    lines = ["user_id,item_id,timestamp,event,value"]
    for u in range(n_users):
        for j in range(per_user):
            item = (u + j) % n_items
            lines.append(f"u{u},i{item},2024-01-{1 + (u + j) % 28:02d}T10:00:00Z,purchase,1")
    lines += extra or []
    return "\n".join(lines) + "\n"


def retail_csv(rows: list[str], customers: int = 12) -> str:
    """An Online Retail CSV with ``customers`` ordinary buyers plus the given rows."""
    lines = [RETAIL_HEADER]
    for c in range(customers):
        for j in range(4):
            code = 20000 + (c + j) % 12
            lines.append(f"5{c:05d},{code},ITEM {code},2,2011-0{1 + j}-0{1 + c % 9} 10:00:00,"
                         f"1.5,{17000 + c}.0,United Kingdom")
    return "\n".join(lines + rows) + "\n"
