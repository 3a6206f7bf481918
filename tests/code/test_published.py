"""benchmarks/published.py on a MovieLens-format file written by the synthetic generator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from shoprec.data.synthetic import generate, write_movielens

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # a subprocess importing the library
def test_published_protocol_on_a_movielens_file(tmp_path: Path) -> None:
    ratings_path, movies_path = write_movielens(
        generate(tmp_path / "synth", users=400, items=200, interactions=12_000, seed=3),
        tmp_path / "ml")
    ratings = pd.read_csv(ratings_path)
    assert list(ratings.columns) == ["userId", "movieId", "rating", "timestamp"]
    assert set(ratings["rating"]) <= {3.0, 4.0, 5.0}
    assert not ratings.duplicated(["userId", "movieId"]).any()
    assert list(pd.read_csv(movies_path).columns) == ["movieId", "title", "genres"]

    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "published.py"), ratings_path,
         "--models", "popularity,ease,mf", "--json-out", str(out)],
        capture_output=True, text=True, check=False, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| model | status | precision@20 | recall@20 | ndcg@20 ± se |" in done.stdout
    assert "conventions: every rating is relevant (any star); recall@20 = hits /" in \
        done.stdout
    assert "per-user random split, test 20%, validation 10%" in done.stdout
    figures = json.loads(out.read_text())
    rows = {row["model"]: row for row in figures["rows"]}
    assert set(rows) == {"popularity", "ease", "mf"}
    # Per-user random: every user with enough ratings has some in each part.
    split = figures["split"]
    # Every test user scored, as published tables do (the pipeline samples 50,000).
    scored = figures["evaluation_users"]["test"]
    assert scored[0] == scored[1] > 0 and f"{scored[1]:,} of {scored[0]:,} test users" \
        in done.stdout
    assert rows["ease"]["test"]["ndcg_se@20"] > 0
    assert split["test"]["rows"] == pytest.approx(0.2 * len(ratings), rel=0.1)
    for model in ("ease", "mf"):
        assert rows[model]["status"] == "ok"
        assert rows[model]["refit_seconds"] >= 0
        # The planted tastes survive the conversion: the models learn them.
        assert rows[model]["test"]["ndcg@20"] > 1.2 * rows["popularity"]["test"]["ndcg@20"]
        assert f"| {model} | ok |" in done.stdout
