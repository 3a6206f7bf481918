"""Stock-aware batch recommendations on planted data: products forecast to sell out move
down or leave the lists, the others keep their order; bad stock files are refused."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from shoprec.batch import write_recommendations
from shoprec.errors import ConfigError, DataError
from shoprec.features.idmap import IdMap
from shoprec.inventory import availability, read_forecast, read_stock
from shoprec.models import Popularity
from shoprec.models.mf import ImplicitALS
from shoprec.registry.bundle import ModelBundle

WEEKS = pd.date_range("2025-01-06", periods=4, freq="7D")


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    """Two planted shopper groups, each buying within its own half of the catalogue."""
    rng = np.random.default_rng(5)
    n_users, n_items = 120, 40
    group = np.arange(n_users) % 2
    half = np.arange(n_items) // (n_items // 2)
    likes = (group[:, None] == half[None, :]) * 0.3 + 0.01
    dense = (rng.random((n_users, n_items)) < likes).astype(np.float32)
    history = sp.csr_matrix(dense)
    # Unweighted, as when this test was written: it needs first choices that many lists
    # share, and under BM25 the second most common first choice was in few of them.
    model = ImplicitALS(factors=4, iterations=10, regularization=0.1, seed=1,
                        weighting="none").fit(history)
    return ModelBundle(model=model, users=IdMap([f"u{i}" for i in range(n_users)]),
                       items=IdMap([f"i{i}" for i in range(n_items)]), history=history,
                       fallback=Popularity().fit(history), meta={"model": "mf"})


def _forecast(demand: dict[str, float]) -> pd.DataFrame:
    """A planted forecast: each product's demand spread evenly over four weeks."""
    return pd.DataFrame([(item, week, units / len(WEEKS)) for item, units in demand.items()
                         for week in WEEKS], columns=["item_id", "week", "forecast"])


def _lists(bundle: ModelBundle, folder: Path, share: np.ndarray | None) -> pd.DataFrame:
    write_recommendations(bundle, folder, k=5, availability=share)
    return pd.read_parquet(folder).sort_values(["user_id", "rank"])


def test_availability_is_the_share_of_forecast_demand_the_stock_covers() -> None:
    ids = np.array(["a", "b", "c", "d", "e", "f"])
    stock = pd.Series({"a": 100.0, "b": 10.0, "c": 0.0, "e": 5.0, "f": 0.0})
    forecast = _forecast({"a": 40.0, "b": 40.0, "c": 8.0, "d": 80.0})
    # a: plenty; b: a quarter; c: none left; d: no stock record; e: no forecast; f: none
    # left and no forecast (the forecast leaves out products sold in few weeks): none to sell.
    assert availability(ids, stock, forecast).tolist() == [1.0, 0.25, 0.0, 1.0, 1.0, 0.0]
    # Stock that must last only the first week: b's 10 units cover its 10.
    assert availability(ids, stock, forecast, weeks=1).tolist() == [1.0, 1.0, 0.0, 1.0, 1.0,
                                                                     0.0]
    # Another shop's forecast holds nothing back but what has no units, and says so.
    other = _forecast({"x": 40.0})
    assert availability(ids, stock, other).tolist() == [1.0, 1.0, 0.0, 1.0, 1.0, 0.0]
    # No forecast at all (`--forecast none`, a shop without one): the stock alone holds
    # back what has no units left; it needed a registered forecast before.
    for weeks in (0, 2):
        assert availability(ids, stock, read_forecast(" None "), weeks).tolist() == [
            1.0, 1.0, 0.0, 1.0, 1.0, 0.0]


def test_products_forecast_to_sell_out_move_down_and_empty_ones_leave(
        bundle: ModelBundle, tmp_path: Path) -> None:
    plain = _lists(bundle, tmp_path / "plain", None)
    ids = np.asarray(bundle.items.ids)
    firsts = plain[plain["rank"] == 1]["item_id"].value_counts()
    gone, scarce = firsts.index[0], firsts.index[1]  # the two most frequent first choices
    stock = pd.Series({gone: 0.0, scarce: 10.0, **{i: 1000.0 for i in ids
                                                    if i not in (gone, scarce)}})
    forecast = _forecast({i: 40.0 for i in ids})
    share = availability(ids, stock, forecast)
    assert share[list(ids).index(scarce)] == pytest.approx(0.25)
    limited = _lists(bundle, tmp_path / "stock", share)
    assert gone in set(plain["item_id"]) and gone not in set(limited["item_id"])

    def mean_rank(frame: pd.DataFrame, item: str) -> float:
        # Users whose list lacks the item count it at rank 6 (just below a list of five).
        ranks = frame[frame["item_id"] == item].set_index("user_id")["rank"]
        return float(ranks.reindex(plain["user_id"].unique()).fillna(6).mean())

    assert mean_rank(limited, scarce) > mean_rank(plain, scarce) + 0.5
    # Every list stays full, and the well-stocked products keep their relative order.
    assert (limited.groupby("user_id").size() == 5).all()
    for user, frame in plain.groupby("user_id"):
        kept = [i for i in frame["item_id"] if i not in (gone, scarce)]
        now = limited[limited["user_id"] == user]["item_id"].tolist()
        assert [i for i in now if i in kept] == kept[:len([i for i in now if i in kept])]


def test_a_forecast_without_stock_is_refused_in_the_form_too() -> None:
    """The batch deployment took a forecast without stock_path and ignored it; the
    command line refused the same (--forecast is read with --stock)."""
    from pydantic import ValidationError

    from shoprec.config import BatchConfig

    for forecast in ("none", "/no/such/forecast.parquet"):
        with pytest.raises(ValidationError, match="forecast is read with stock_path"):
            BatchConfig(forecast=forecast)
    assert BatchConfig(stock_path="stock.csv", forecast="none").forecast == "none"
    assert BatchConfig().stock_path == ""


def test_bad_stock_files_are_refused_with_the_rows_to_fix(tmp_path: Path) -> None:
    cases = {
        "missing.csv": ("item_id,count\na,1\n", "lacks the column.s. units"),
        "negative.csv": ("item_id,units\na,1\nb,-3\nc,many\n", "2 row.s. .*lines 3, 4"),
        "twice.csv": ("item_id,units\na,1\na,2\n", "more than once .a."),
        # A field too many: pandas took item_id as an index and read units from the third.
        "extra.csv": ("item_id,units\na,0,5\nb,2\n", "could not be read as CSV"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError, match=message):
            read_stock(tmp_path / name)
    with pytest.raises(ConfigError, match="does not exist"):
        read_stock(tmp_path / "nope.csv")
    (tmp_path / "good.csv").write_text("item_id,units\n007,3\nb,0\n")
    assert read_stock(tmp_path / "good.csv").to_dict() == {"007": 3.0, "b": 0.0}
    # Ids spelled as a spreadsheet or a float column writes them are the shop's ids.
    (tmp_path / "floats.csv").write_text("item_id,units\n47566.0,0\n 22423 ,4\n")
    assert read_stock(tmp_path / "floats.csv").to_dict() == {"47566": 0.0, "22423": 4.0}
    pd.DataFrame({"item_id": [47566.0, 22423.0], "units": [0, 4]}).to_parquet(
        tmp_path / "floats.parquet")
    assert read_stock(tmp_path / "floats.parquet").to_dict() == {"47566": 0.0, "22423": 4.0}


def test_the_forecast_is_read_from_its_latest_partition(tmp_path: Path) -> None:
    for day, units in (("2025-01-01", 1.0), ("2025-01-08", 2.0)):
        folder = tmp_path / f"forecast_date={day}"
        folder.mkdir()
        _forecast({"a": units * 4}).assign(upper=9.0).to_parquet(folder / "forecast.parquet")
    assert read_forecast(str(tmp_path))["forecast"].tolist() == [2.0] * 4
    with pytest.raises(ConfigError, match="run `shoprec forecast` first"):
        read_forecast(str(tmp_path / "empty"))
    # A file with a week that is no date, or a figure that is no count, is refused.
    for column, value in (("week", "soon"), ("forecast", -1.0), ("forecast", float("nan"))):
        broken = _forecast({"a": 4.0})
        if column == "week":  # a file whose weeks are text, one of them no date
            broken["week"] = broken["week"].dt.strftime("%Y-%m-%d")
        broken.loc[1, column] = value
        broken.to_parquet(tmp_path / "broken.parquet")
        with pytest.raises(ConfigError, match="1 row.s. without an item_id, with a week"):
            read_forecast(str(tmp_path / "broken.parquet"))


def test_batch_days_read_back_as_one_data_set_and_killed_drafts_go(
        bundle: ModelBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Days written with and without explanations read back together with their
    explanations; a killed run's draft is removed by the next run (a live one's, or another
    machine's, is not); a batch size past memory is cut, not an 18 TiB allocation."""
    import logging
    import subprocess
    import sys
    from datetime import UTC, datetime

    from shoprec import batch

    first, second = datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 3, 2, tzinfo=UTC)
    write_recommendations(bundle, tmp_path, k=3, generated_at=first)  # no explanations
    day = tmp_path / "generated_date=2025-03-02"
    day.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    here = batch._writer().rpartition(".")[0]
    (day / f".recommendations-{here}.{dead}.parquet.tmp").write_bytes(b"half a file")
    live = day / f".recommendations-{here}.{os.getppid()}.parquet.tmp"
    elsewhere = day / f".recommendations-otherhost.4026531836.{dead}.parquet.tmp"
    for draft in (live, elsewhere):
        draft.write_bytes(b"another run's")
    # Named as an older shoprec named them (PID alone): removed once an hour old.
    older, recent = (day / f".recommendations-{n}.parquet.tmp" for n in (dead, os.getppid()))
    for draft in (older, recent):
        draft.write_bytes(b"an older shoprec's")
    os.utime(older, (time.time() - 7200, time.time() - 7200))
    # Another host's (a container restarted under a new name) a day old: abandoned.
    gone = day / f".recommendations-oldhost.4026531836.{dead}.parquet.tmp"
    gone.write_bytes(b"a killed container's")
    os.utime(gone, (time.time() - 2 * 86_400, time.time() - 2 * 86_400))
    # A run killed writing an earlier day left its draft in a day no later run writes.
    missed = tmp_path / "generated_date=2025-02-28"
    missed.mkdir()
    (missed / f".recommendations-{here}.{dead}.parquet.tmp").write_bytes(b"half a file")
    (tmp_path / "generated_date=2025-03-01" / f".recommendations-{here}.{dead}.parquet.tmp"
     ).write_bytes(b"half a file")
    # Scores of 7 users x the catalogue at a time, on one thread: a huge size is cut to 7.
    monkeypatch.setattr(batch, "BATCH_BYTES", 4 * len(bundle.items.ids) * 7)
    with caplog.at_level(logging.INFO, logger="shoprec.batch"):
        result = write_recommendations(bundle, tmp_path, k=3, generated_at=second,
                                       explain=True, batch_size=10**12, threads=1)
    assert "batch_size 1000000000000 cut to 7" in caplog.text
    assert result.rows == 3 * len(bundle.users.ids)
    assert sorted(p.name for p in day.iterdir()) == sorted(
        [live.name, elsewhere.name, recent.name, "recommendations.parquet"])
    assert not missed.exists()
    assert [p.name for p in (tmp_path / "generated_date=2025-03-01").iterdir()] == [
        "recommendations.parquet"]
    frame = pd.read_parquet(tmp_path)
    assert "because" in frame.columns
    by_day = frame.groupby(frame["generated_date"].astype(str))["because"]
    assert by_day.apply(lambda b: b.isna().all()).to_dict() == {"2025-03-01": True,
                                                               "2025-03-02": False}


def test_a_days_batch_of_another_registered_model_is_never_replaced(
        bundle: ModelBundle, tmp_path: Path) -> None:
    """Two shops' batches into one folder (the default runs/batch) replaced each other's
    day without a word, and the rows did not say whose they were."""
    from datetime import UTC, datetime

    import pyarrow.parquet as pq

    from shoprec.batch import MODEL_KEY, check_day_file
    from shoprec.errors import ConfigError

    day = datetime(2025, 3, 1, tzinfo=UTC)
    first = write_recommendations(bundle, tmp_path, k=3, generated_at=day,
                                  model_name="north-recommender")
    metadata = pq.read_schema(first.path).metadata
    assert metadata[MODEL_KEY.encode()] == b"north-recommender"
    # How the lists were made, beside whose they are (a reader's consumer could not tell
    # a diversity or stock run's blended scores from the model's).
    from shoprec.batch import OPTIONS_KEY

    assert json.loads(metadata[OPTIONS_KEY.encode()]) == {
        "k": 3, "explain": False, "diversity": 0.0, "stock": False}
    before = Path(first.path).read_bytes()
    with pytest.raises(ConfigError, match="holds north-recommender's recommendations, and "
                                          "a batch's folder is read as one data set; give "
                                          "south-recommender a folder"):
        check_day_file(tmp_path, "south-recommender")
    # Another day's file of the other shop too (a reader's "latest day" switched shops).
    with pytest.raises(ConfigError, match="generated_date=2025-03-01.*holds north"):
        check_day_file(tmp_path, "south-recommender")
    check_day_file(tmp_path, "north-recommender")
    with pytest.raises(ConfigError, match="holds north-recommender's"):
        write_recommendations(bundle, tmp_path, k=3, generated_at=day,
                              model_name="south-recommender")
    assert Path(first.path).read_bytes() == before
    # The same model's run of the same day replaces it, as before.
    again = write_recommendations(bundle, tmp_path, k=2, generated_at=day,
                                  model_name="north-recommender")
    assert pd.read_parquet(again.path)["rank"].max() == 2


def test_a_challengers_batch_never_replaces_the_champions_day(bundle: ModelBundle,
                                                              tmp_path: Path) -> None:
    """An A/B test's second arm into the same folder replaced the champion's day, and the
    file did not say which alias had scored it."""
    from datetime import UTC, datetime

    import pyarrow.parquet as pq

    from shoprec.batch import SCORED_BY_KEY, check_day_file
    from shoprec.errors import ConfigError

    day = datetime(2025, 3, 1, tzinfo=UTC)
    first = write_recommendations(bundle, tmp_path, k=3, generated_at=day,
                                  model_name="north", scored_by="champion")
    assert pq.read_schema(first.path).metadata[SCORED_BY_KEY.encode()] == b"champion"
    before = Path(first.path).read_bytes()
    for other, named in (("challenger", "north@challenger"), ("version 2", "north version 2")):
        with pytest.raises(ConfigError, match=f"holds north@champion's recommendations.*"
                                              f"give the batch of {named} a folder"):
            check_day_file(tmp_path, "north", other)
        with pytest.raises(ConfigError, match="holds north@champion's"):
            write_recommendations(bundle, tmp_path, k=3, generated_at=day,
                                  model_name="north", scored_by=other)
    assert Path(first.path).read_bytes() == before
    # The champion's next run of the day replaces it, whichever version champion is now.
    write_recommendations(bundle, tmp_path, k=2, generated_at=day, model_name="north",
                          scored_by="champion")
    assert pd.read_parquet(first.path)["rank"].max() == 2


def test_stock_weeks_count_from_this_week_not_from_a_past_one() -> None:
    """A forecast made weeks ago begins with weeks already past: `--stock-weeks 1` measured
    the stock against one of them."""
    today = pd.Timestamp.now(tz="UTC").normalize().tz_localize(None)
    monday = today - pd.Timedelta(days=today.dayofweek)
    weeks = [monday - pd.Timedelta(weeks=2), monday - pd.Timedelta(weeks=1), monday,
             monday + pd.Timedelta(weeks=1)]
    # b's demand: 40 in each past week, 5 in this one.
    forecast = pd.DataFrame([("b", w, 40.0 if w < monday else 5.0) for w in weeks],
                            columns=["item_id", "week", "forecast"])
    stock = pd.Series({"b": 10.0})
    assert availability(np.array(["b"]), stock, forecast, weeks=1).tolist() == [1.0]


def test_a_days_file_is_filed_under_utcs_day(bundle: ModelBundle, tmp_path: Path) -> None:
    """A reader's: a Paris time just after midnight was filed under Paris's day while its
    rows said UTC's."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    paris = datetime(2025, 3, 2, 0, 30, tzinfo=ZoneInfo("Europe/Paris"))
    made = write_recommendations(bundle, tmp_path, k=2, generated_at=paris)
    assert "generated_date=2025-03-01" in str(made.path)
    rows = pd.read_parquet(made.path)
    assert str(rows["generated_at"].iloc[0]) == "2025-03-01 23:30:00+00:00"
