"""Compressed storage of model arrays: rounding bounded, small arrays kept, old files read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from shoprec.config import DataConfig, SplitConfig
from shoprec.errors import ConfigError
from shoprec.evaluation import evaluate
from shoprec.models import EASE, ImplicitALS
from shoprec.models.storage import load_arrays, load_sparse, save_arrays, save_sparse
from shoprec.pipeline import prepare


def test_rounding_is_bounded_and_small_arrays_are_kept(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    big = (rng.standard_normal((200, 64)) * np.arange(1, 201)[:, None]).astype(np.float32)
    small = rng.random(100).astype(np.float32)
    for precision, sizes in (("float16", 2), ("int8", 4)):
        path = tmp_path / f"{precision}.npz"
        save_arrays(path, {"big": big, "small": small, "n": np.int64(7)}, precision)
        back = load_arrays(path)
        assert back["big"].dtype == np.float32 and back["n"] == 7
        np.testing.assert_array_equal(back["small"], small)  # under the size threshold
        step = np.abs(big).max(axis=1, keepdims=True) / (127 if precision == "int8" else 1000)
        assert np.all(np.abs(back["big"] - big) <= step)
        # About 1/sizes of the float32 bytes for the big array.
        plain = tmp_path / "plain.npz"
        save_arrays(plain, {"big": big})
        assert path.stat().st_size < plain.stat().st_size / sizes * 1.2
    # Plain files (what np.savez wrote before compression existed) still load.
    np.savez(tmp_path / "old.npz", big=big)
    np.testing.assert_array_equal(load_arrays(tmp_path / "old.npz")["big"], big)
    with pytest.raises(ValueError, match="unknown precision"):
        save_arrays(tmp_path / "x.npz", {"big": big}, "float8")


def test_sparse_values_round_per_row(tmp_path: Path) -> None:
    matrix = sp.random(300, 400, density=0.1, format="csr", dtype=np.float32, random_state=2)
    matrix.data *= np.repeat(np.arange(1, 301), np.diff(matrix.indptr)).astype(np.float32)
    for precision in ("float16", "int8"):
        save_sparse(tmp_path / "m.npz", matrix, precision)
        back = load_sparse(tmp_path / "m.npz")
        assert back.nnz == matrix.nnz  # the structure is kept (int8 may round to 0)
        error = np.abs((back - matrix).toarray()).max(axis=1)
        peak = np.abs(matrix).max(axis=1).toarray().ravel()
        assert np.all(error <= peak / 127 + 1e-6)
    sp.save_npz(tmp_path / "scipy.npz", matrix)  # scipy's own layout still reads
    assert (load_sparse(tmp_path / "scipy.npz") != matrix).nnz == 0


@pytest.fixture(scope="module")
def planted(synthetic_dir):
    return prepare(DataConfig(interactions=str(synthetic_dir / "interactions.parquet")),
                   split_config=SplitConfig(test_days=20, validation_days=20)).encoded


def test_pruned_ease_keeps_the_top_weights_and_still_learns(planted, tmp_path: Path) -> None:
    full = EASE(regularization=100.0).fit(planted.train)
    base = evaluate(full, planted.train, planted.validation)["ndcg@10"]
    n = full.weights_.shape[0]
    pruned = EASE(regularization=100.0).fit(planted.train)
    pruned.compress(prune_top=20)
    per_row = np.diff(pruned.weights_.indptr)
    assert per_row.max() <= 20 and pruned.weights_.nnz <= 20 * n
    # Each row keeps its largest weights in magnitude.
    row = np.asarray(full.weights_[5])
    kept = set(pruned.weights_[5].indices)
    assert kept == set(np.argsort(-np.abs(row))[:20])
    pruned.compress("int8", prune_top=20)
    pruned.save(tmp_path / "ease")
    loaded = EASE.load(tmp_path / "ease")
    assert sp.issparse(loaded.weights_)
    found = evaluate(loaded, planted.train, planted.validation)["ndcg@10"]
    assert found > 0.9 * base, (found, base)
    # Explanations read the pruned weights too: still an exact decomposition.
    user = planted.train[:1]
    items = loaded.recommend(user, k=3)[0][0]
    assert len(loaded.explain(user, items)) == 3
    _, matrix = loaded.contributions(user, np.arange(n))
    np.testing.assert_allclose(matrix.sum(axis=1), loaded.score(user)[0], rtol=1e-4,
                               atol=1e-5)
    # Keeping every weight changes nothing.
    whole = EASE(regularization=100.0).fit(planted.train)
    whole.compress(prune_top=n)
    np.testing.assert_allclose(whole.score(planted.train[:5]), full.score(planted.train[:5]),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="applies to ease"):
        ImplicitALS().compress(prune_top=10)
    with pytest.raises(ConfigError, match="--quantize must be one of"):
        full.compress("float8")


def test_the_library_refuses_what_the_command_line_refuses(tmp_path) -> None:
    """A second reader from a notebook: factors=0 printed 64,785 lines of BLAS errors and
    "fitted"; another family's folder read as an older shoprec's; k=0 failed in numpy."""
    import numpy as np
    import pytest
    import scipy.sparse as sp

    from shoprec.errors import ConfigError
    from shoprec.models import load_model, make_model

    for params in ({"factors": 0}, {"factors": -1}, {"regularization": -1.0}):
        with pytest.raises(ConfigError, match="bad hyperparameters for mf: factors|"
                                              "bad hyperparameters for mf: regularization"):
            make_model("mf", params)
    # MLflow keeps a run's parameters as text: "8" is read as the 8 it stands for.
    assert make_model("mf", {"factors": "8"}).factors == 8
    rows = sp.random(20, 15, density=0.3, format="csr", random_state=1, dtype=np.float32)
    popularity = make_model("popularity").fit(rows)
    popularity.save(tmp_path / "pop")
    with pytest.raises(ConfigError, match="holds a saved popularity model, not mf"):
        load_model(str(tmp_path / "pop"), "mf")
    with pytest.raises(ConfigError, match="unknown model 'knn'"):
        load_model(str(tmp_path / "pop"), "knn")
    loaded = load_model(str(tmp_path / "pop"), "popularity")
    assert loaded.recommend(rows[:2], 3)[0].shape == (2, 3)
    with pytest.raises(ValueError, match="k must be at least 1, got 0"):
        popularity.recommend(rows[:2], 0)
    from shoprec.evaluation import evaluate

    for ks in ([], [0]):
        with pytest.raises(ValueError, match="ks must be cut-offs of at least 1"):
            evaluate(popularity, rows, rows, ks=ks)
