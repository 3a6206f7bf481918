"""The pieces of a run's life after the first: typed hyperparameters, recipes, the gate's
like-for-like comparison, and a registry that fails closed."""

from __future__ import annotations

import inspect
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from shoprec.config import DEFAULT_MODELS, CandidateParams, TrainingConfig
from shoprec.errors import RegistryError
from shoprec.models import CANDIDATES
from shoprec.registry.publish import gate
from shoprec.registry.recipe import ChampionReference, Recipe, champion_reference

SHOPREC = str(Path(sys.executable).with_name("shoprec"))
RUN_SETTINGS = {"seed", "threads"}


@pytest.mark.parametrize("name", DEFAULT_MODELS)
def test_declared_hyperparameters_are_the_models_own(name: str) -> None:
    """Every constructor argument but the run's settings is declared, with the same default."""
    signature = inspect.signature(CANDIDATES[name].__init__).parameters
    declared = CandidateParams().of(name)
    assert set(declared) == set(signature) - {"self"} - RUN_SETTINGS
    for key, value in declared.items():
        assert value == signature[key].default, (name, key)
    CANDIDATES[name](**declared)  # and the model takes them as they are


def test_vae_decays_its_rate_by_default_and_dae_does_not() -> None:
    """vae's own defaults survive a partial override; dae's rate stays constant."""
    from shoprec_cli.app import _parse_params

    from shoprec.models import MultDAE, MultVAE

    params = TrainingConfig(params={"vae": {"epochs": 7}}).params
    assert (params.of("vae")["learning_rate"], params.of("vae")["learning_rate_half_life"]) \
        == (3e-3, 100)
    assert (params.of("dae")["learning_rate"], params.of("dae")["learning_rate_half_life"],
            params.of("dae")["average_half_life"]) == (2e-3, None, 50)
    constant = TrainingConfig(params=_parse_params(["vae.learning_rate_half_life=null"]))
    assert constant.params.of("vae")["learning_rate_half_life"] is None
    # A vae recipe that names no rate trained at the constant 0.001 (the old default).
    old = MultVAE.current_params({"epochs": 7})
    assert (old["learning_rate"], old["learning_rate_half_life"]) == (1e-3, None)
    # So did a dae recipe (and without an average, test_neural_autoencoders checks).
    assert MultDAE.current_params({"epochs": 7})["learning_rate"] == 1e-3
    kept = MultVAE.current_params({"learning_rate": 3e-3, "learning_rate_half_life": 100})
    assert (kept["learning_rate"], kept["learning_rate_half_life"]) == (3e-3, 100)


@pytest.mark.parametrize("params", [
    {"mf": {"factors": 0}}, {"mf": {"factors": 1.5}}, {"mf": {"regularization_grid": []}},
    {"ease": {"regularization": -1}}, {"vae": {"dropout": 1.0}}, {"dae": {"epochs": 0}},
    {"cfgan": {"zr_ratio": 1.5}}, {"cfgan": {"generator_hidden": [0]}},
    {"content": {"embedding_dims": 0}}, {"mf-ratings": {"iterations": 0}},
    {"mf": {"no_such_setting": 1}}, {"telepathy": {}}])
def test_hyperparameters_outside_their_range_are_refused(params: dict) -> None:
    with pytest.raises(ValidationError):
        TrainingConfig(params=params)


@pytest.mark.parametrize(("models", "words"), [
    (["popularity", "nosuch"], "unknown model(s) nosuch; choose from popularity, mf"),
    ([" ", ""], "names no model; choose from")])
def test_the_prefect_form_refuses_unknown_or_no_models(models: list[str], words: str) -> None:
    """The form's rules are the command line's: both build this configuration."""
    with pytest.raises(ValidationError, match=words.replace("(", r"\(").replace(")", r"\)")):
        TrainingConfig(models=models)
    assert TrainingConfig(models=[" ease "]).models == ["popularity", "ease"]


def test_hyperparameters_are_in_the_prefect_form_schema() -> None:
    schema = TrainingConfig.model_json_schema()
    candidates = schema["$defs"]["CandidateParams"]["properties"]
    assert set(candidates) == set(DEFAULT_MODELS)
    als = schema["$defs"]["ALSParams"]["properties"]["factors"]
    assert (als["minimum"], als["maximum"], als["default"]) == (1, 4096, 64)
    assert als["description"]


@pytest.mark.slow
def test_cli_refuses_a_bad_hyperparameter_before_reading_any_data(tmp_path: Path) -> None:
    for value, words in (("mf.factors=0", "allowed: an integer >= 1 and <= 4096"),
                         ("vae.dropout=1.5", "allowed: a number >= 0 and < 1"),
                         ("mf.speed=3", "mf has no hyperparameter 'speed'")):
        done = subprocess.run([SHOPREC, "train", "--interactions", "no-such-file.csv",
                               "--param", value], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 2, done.stderr
        assert words in done.stderr and "Traceback" not in done.stderr
        assert "no-such-file" not in done.stderr  # refused before the data was looked at


def test_a_recipe_survives_the_registry_tags() -> None:
    recipe = Recipe("cfgan", {"generator_hidden": (16, 8), "epochs": 7, "threads": 2,
                              "seed": 3}, {"quantity_damping": "log"}, "2011-12-09T12:50:00",
                    "f" * 64, "abc")
    again = Recipe.from_tags(recipe.to_tags())
    assert again is not None and again.candidate == "cfgan" and again.data_cutoff
    # The retrain uses its own share of cores; everything else is the recipe's.
    # Recorded before the 0/1 families chose how to read rows: it read them as 0/1; and
    # before cfgan's learning rate decayed: it trained at a constant rate.
    assert again.training_params(threads=1) == {"generator_hidden": [16, 8], "epochs": 7,
                                                "threads": 1, "seed": 3,
                                                "history_weights": False,
                                                "learning_rate_half_life": None}
    chose = Recipe("ease", {"regularization": 200.0, "history_weights": True})
    assert chose.training_params()["history_weights"] is True
    assert "history_weights=True" in chose.describe()
    assert "history_weights" not in Recipe("mf", {"factors": 8}).training_params()
    assert Recipe.from_tags({}) is None and Recipe.from_tags({"recipe": "{not json"}) is None


POPULARITY = {"ndcg@10": 0.02}


def test_gate_without_a_champion_passes_on_popularity_alone() -> None:
    verdict = gate("ndcg@10", {"ndcg@10": 0.05}, POPULARITY, 0.05, ChampionReference())
    assert verdict.passed and verdict.checks[1].reason == "no champion yet"


def test_gate_compares_with_the_champions_recipe_and_names_it() -> None:
    champion = ChampionReference("4", Recipe("ease", {"regularization": 200.0}))
    equal = gate("ndcg@10", {"ndcg@10": 0.05}, POPULARITY, 0.05, champion, {"ndcg@10": 0.05})
    assert equal.passed and equal.champion_version == "4"
    assert "champion version 4's recipe ease (regularization=200.0) retrained on this " \
           "run's training split" in equal.checks[1].reason
    worse = gate("ndcg@10", {"ndcg@10": 0.049}, POPULARITY, 0.05, champion, {"ndcg@10": 0.05})
    assert not worse.passed and not worse.checks[1].passed and worse.checks[0].passed
    lost = gate("ndcg@10", {"ndcg@10": 0.05}, POPULARITY, 0.05, champion, None,
                "ModelSkippedError: ease is limited to 10,000 items")
    assert not lost.passed and "could not be retrained" in lost.checks[1].reason
    assert "10,000 items" in lost.checks[1].reason


def test_gate_keeps_the_champion_when_the_test_rests_on_a_handful_of_users() -> None:
    """A holiday night's 29 test users moved champion on 0.2527 vs 0.2447: one user's list
    moved ndcg@10 by about 0.03."""
    champion = ChampionReference("4", Recipe("ease", {"regularization": 200.0}))
    few = gate("ndcg@10", {"ndcg@10": 0.2527, "users": 29.0}, POPULARITY, 0.05, champion,
               {"ndcg@10": 0.2447}, min_users=50)
    assert not few.passed and few.checks[0].passed and few.checks[1].passed
    assert few.checks[2].name == "enough_test_users" and not few.checks[2].passed
    assert "29 test users evaluated, fewer than the 50" in few.checks[2].reason
    assert "--gate-min-users" in few.checks[2].reason
    enough = gate("ndcg@10", {"ndcg@10": 0.2527, "users": 371.0}, POPULARITY, 0.05,
                  champion, {"ndcg@10": 0.2447}, min_users=50)
    assert enough.passed and enough.checks[2].passed
    # The first champion of a model has nothing to be replaced: no such check.
    first = gate("ndcg@10", {"ndcg@10": 0.2527, "users": 29.0}, POPULARITY, 0.05,
                 ChampionReference(), min_users=50)
    assert first.passed and [c.name for c in first.checks] == [
        "beats_popularity", "not_worse_than_champion"]
    assert (first.test_users, first.min_users) == (29, 50)  # recorded with the version
    # A new shop's first champion, judged on 13: a night judged on 29 (not fewer) replaces
    # it, where it kept better models out for days.
    small = ChampionReference("1", Recipe("content", {}), test_users=13)
    grown = gate("ndcg@10", {"ndcg@10": 0.2527, "users": 29.0}, POPULARITY, 0.05, small,
                 {"ndcg@10": 0.2447}, min_users=50)
    assert grown.passed and grown.checks[2].passed
    assert ("29 test users evaluated, fewer than the 50 a champion is replaced on, but at "
            "least the 13 champion version 1 was itself published on") in grown.checks[2].reason
    fewer = gate("ndcg@10", {"ndcg@10": 0.2527, "users": 9.0}, POPULARITY, 0.05, small,
                 {"ndcg@10": 0.2447}, min_users=50)
    assert not fewer.passed and "(champion version 1 was published on 13)" in \
        fewer.checks[2].reason
    assert gate("ndcg@10", {"ndcg@10": 0.2527, "users": 29.0}, POPULARITY, 0.05, champion,
                {"ndcg@10": 0.2447}, min_users=0).passed


def test_gate_keeps_the_champion_when_the_data_is_another_shops() -> None:
    """Two shops' catalogues share nothing; a shop's next night shares most of its own."""
    from shoprec.registry.recipe import CatalogueSketch, catalogue_sketch, sketch_overlap

    north = catalogue_sketch(f"n{i}" for i in range(3000))
    tonight = catalogue_sketch(f"n{i}" for i in range(300, 3200))
    south = catalogue_sketch(f"s{i}" for i in range(500))
    grown = catalogue_sketch(f"n{i}" for i in range(20_000))  # north's 3,000 and more
    assert north.size == 3000 and len(north.hashes) == 256 and len(north.to_tag()) < 3000
    assert CatalogueSketch.from_tag(north.to_tag()) == north
    assert sketch_overlap(north, north) == 1.0
    estimate = sketch_overlap(north, tonight)
    assert estimate is not None and 0.8 < estimate <= 1.0  # truly 2,700 of 2,900: 0.93
    # Jaccard alone read 0.15 for a shop grown 6-fold (0.075 for 13-fold), and failed it.
    assert sketch_overlap(north, grown) == 1.0
    # Catalogues too far apart in size to compare enough ids: no verdict, not a false one.
    assert sketch_overlap(catalogue_sketch(f"n{i}" for i in range(300)),
                          catalogue_sketch(f"n{i}" for i in range(1_000_000, 2_000_000))) is None
    assert sketch_overlap(north, south) == 0.0
    assert sketch_overlap(north, None) is None
    champion = ChampionReference("4", Recipe("ease", {"regularization": 200.0}),
                                 catalogue=north)
    judged = {}
    for name, sketch in (("tonight", tonight), ("south", south), ("unrecorded", None)):
        judged[name] = gate("ndcg@10", {"ndcg@10": 0.06}, POPULARITY, 0.05, champion,
                            {"ndcg@10": 0.05}, catalogue=sketch)
    checks = {c.name: c for c in judged["tonight"].checks}
    assert judged["tonight"].passed and checks["same_catalogue"].passed
    assert checks["enough_items"].passed  # 2,900 products against 3,000
    assert not judged["south"].passed
    south = {c.name: c for c in judged["south"].checks}["same_catalogue"]
    assert "about 0% of the smaller catalogue in common" in south.reason
    assert "another shop's data" in south.reason
    assert "`shoprec promote --force --reason TEXT`" in south.reason  # no "--version N"
    # A champion registered before the sketch was recorded: no such check.
    assert judged["unrecorded"].passed
    assert "same_catalogue" not in [c.name for c in judged["unrecorded"].checks]


def test_gate_keeps_the_champion_on_a_bad_export_night() -> None:
    """A reader's bad nights, each of which became champion with every check passed:
    another shop numbering its products alike, shoppers re-numbered, an export cut to a
    tenth, an old export. A good night passes every one of the new checks."""
    from shoprec.registry.recipe import catalogue_sketch, titled_sketch

    ids = [f"I{i:03d}" for i in range(150)]
    users = [f"U{i}" for i in range(800)]
    champion = ChampionReference(
        "2", Recipe("ease", {"regularization": 200.0}, data_cutoff="2024-06-28T12:00:00+00:00"),
        catalogue=catalogue_sketch(ids), shoppers=catalogue_sketch(users),
        titled=titled_sketch(ids, [f"mug {i}" for i in range(150)]))

    def judged(**night: object) -> dict[str, bool]:
        given = {"catalogue": catalogue_sketch(ids), "shoppers": catalogue_sketch(users[5:]),
                 "titled": titled_sketch(ids, [f"Mug {i}" for i in range(150)]),
                 "cutoff": "2024-06-29T08:00:00+00:00", **night}
        verdict = gate("ndcg@10", {"ndcg@10": 0.06}, POPULARITY, 0.05, champion,
                       {"ndcg@10": 0.05}, **given)  # type: ignore[arg-type]
        return {c.name: c.passed for c in verdict.checks}

    good = judged()
    assert all(good.values()) and {"same_titles", "same_shoppers", "enough_data",
                                   "current_data"} <= set(good)
    assert judged(titled=titled_sketch(ids, [f"lamp {i}" for i in range(150)]))[
        "same_titles"] is False
    assert judged(shoppers=catalogue_sketch(f"C1{i}" for i in range(800)))[
        "same_shoppers"] is False
    cut = judged(shoppers=catalogue_sketch(users[:70]))
    assert cut["enough_data"] is False and cut["same_shoppers"] is True
    assert judged(cutoff="2024-03-31T00:00:00+00:00")["current_data"] is False
    # Untitled items, or a champion that recorded none of it: no such checks.
    assert "same_titles" not in judged(titled=titled_sketch(ids, [""] * 150))
    bare = ChampionReference("2", Recipe("ease", {}), catalogue=catalogue_sketch(ids))
    assert [c.name for c in gate("ndcg@10", {"ndcg@10": 0.06}, POPULARITY, 0.05, bare,
                                 {"ndcg@10": 0.05}, catalogue=catalogue_sketch(ids),
                                 shoppers=catalogue_sketch(users)).checks] == [
        "beats_popularity", "not_worse_than_champion", "same_catalogue", "enough_items"]


def test_gate_keeps_a_cut_catalogue_out_and_lets_a_quiet_month_in() -> None:
    """A reader's nights: an export cut to its 149 best sellers (of 2,573) went live with no
    catalogue check shown; a month's window in January failed `enough_data` on a healthy
    export (783 shoppers against November's 1,711, over as many days)."""
    from shoprec.registry.recipe import catalogue_sketch

    items = [f"I{i}" for i in range(2573)]
    users = [f"U{i}" for i in range(1711)]
    champion = ChampionReference(
        "3", Recipe("ease", {"regularization": 50.0}, data_cutoff="2011-11-30T17:00:00"),
        catalogue=catalogue_sketch(items), shoppers=catalogue_sketch(users),
        data_start="2011-11-01T08:00:00")

    def checks(products: int, shoppers: int, start: str, cutoff: str) -> dict:
        verdict = gate("ndcg@10", {"ndcg@10": 0.06}, POPULARITY, 0.05, champion,
                       {"ndcg@10": 0.05}, catalogue=catalogue_sketch(items[:products]),
                       shoppers=catalogue_sketch(users[:shoppers]), start=start, cutoff=cutoff)
        return {c.name: c for c in verdict.checks}

    cut = checks(149, 1500, "2011-11-01T08:00:00", "2011-11-30T17:00:00")
    assert cut["same_catalogue"].passed and "not judged" in cut["same_catalogue"].reason
    assert not cut["enough_items"].passed
    assert "149 products in this run's data, 2,573" in cut["enough_items"].reason
    # A second reader's: 60 of 200 products kept, every shopper still there, over as long
    # a period, passed as "a quieter season". Products fall with a season only if the
    # shoppers fall too.
    best = checks(800, 1700, "2011-11-01T08:00:00", "2011-11-30T17:00:00")["enough_items"]
    assert not best.passed and "a catalogue cut to its best sellers" in best.reason
    assert "(a smaller catalogue)" in best.reason
    both = checks(800, 700, "2012-01-01T08:00:00", "2012-01-30T17:00:00")
    assert both["enough_items"].passed and "a quieter season" in both["enough_items"].reason
    quiet = checks(2000, 783, "2012-01-01T08:00:00", "2012-01-30T17:00:00")
    assert quiet["enough_data"].passed and "a quieter season" in quiet["enough_data"].reason
    assert quiet["current_data"].passed
    # A tenth of the shoppers, or fewer over a shorter period: an export cut short.
    assert not checks(2000, 170, "2012-01-01T08:00:00", "2012-01-30T17:00:00")[
        "enough_data"].passed
    short = checks(2000, 783, "2012-01-25T08:00:00", "2012-01-30T17:00:00")["enough_data"]
    assert not short.passed and "(over 5 and 29 days): under 50%, an export cut short?" \
        in short.reason


def test_popularity_as_the_winner_is_said_to_be_the_baseline_itself() -> None:
    verdict = gate("ndcg@10", POPULARITY, POPULARITY, 0.05, ChampionReference(),
                   winner="popularity")
    assert not verdict.passed
    assert verdict.checks[0].reason.endswith("the winner is the popularity baseline itself "
                                             "(no model did better on validation)")


def test_a_champion_that_stays_says_how_old_its_data_is() -> None:
    """A reader's: the champion's recipe retrained beat the new winner on a few test users,
    and the champion trained on October's data kept serving in December, unsaid."""
    champion = ChampionReference(
        "3", Recipe("ease", {"regularization": 132.93}, data_cutoff="2011-10-31T17:00:00"))
    verdict = gate("ndcg@10", {"ndcg@10": 0.1034}, POPULARITY, 0.05, champion,
                   {"ndcg@10": 0.1236}, cutoff="2011-12-09T12:00:00")
    reason = verdict.checks[1].reason
    assert not verdict.passed
    assert "version 3 stays champion as it was trained, on data up to 2011-10-31 (39 days " \
        "before this run's)" in reason and "shoprec promote --force" in reason
    # Its own values, as the options that train them as a candidate (a tuner's: the
    # nightly trained the configured grid, lost to the tuned recipe, and said nothing).
    assert reason.endswith("give them (with ease among --models): "
                           "--param=ease.regularization=132.93 (training.params in a "
                           "deployment's form)"), reason
    from shoprec_cli.app import _parse_params

    assert _parse_params(["ease.regularization=132.93"]) == {
        "ease": {"regularization": 132.93}}
    # Defaults (a grid read back from JSON as a list) and a value the grid chose are
    # nobody's own: an untuned mf champion was told to give its grid and its choice.
    untuned = ChampionReference("3", Recipe("mf", {
        "regularization": 10.0, "regularization_grid": [1.0, 10.0, 100.0, 1000.0],
        "factors": 64}, data_cutoff="2011-10-31T17:00:00"))
    reason = gate("ndcg@10", {"ndcg@10": 0.1034}, POPULARITY, 0.05, untuned,
                  {"ndcg@10": 0.1236}, cutoff="2011-12-09T12:00:00").checks[1].reason
    assert "--param" not in reason, reason
    tuned = ChampionReference("3", Recipe("mf", {
        "regularization": 5000.0, "regularization_grid": [1.0, 10.0, 100.0, 1000.0],
        "bm25_k1": 2.5}, data_cutoff="2011-10-31T17:00:00"))
    reason = gate("ndcg@10", {"ndcg@10": 0.1034}, POPULARITY, 0.05, tuned,
                  {"ndcg@10": 0.1236}, cutoff="2011-12-09T12:00:00").checks[1].reason
    assert "--param=mf.bm25_k1=2.5 --param=mf.regularization=5000.0 (training" in reason
    # mf refines its grid: 31.62 between 10 and 100 was chosen, not given.
    assert Recipe("mf", {"regularization": 31.62}).own_values() == {}
    # The recipe's label names what differs from the defaults (an auditor's: 64 and 32
    # factors both read "mf (regularization=10.0)").
    assert untuned.recipe.describe() == "mf (regularization=10.0)"
    assert Recipe("mf", {"regularization": 10.0, "factors": 32}).describe() == \
        "mf (regularization=10.0, factors=32)"
    assert Recipe("vae", {"epochs": 8, "history_weights": 0.5}).own_values() == {}


def test_a_champion_trained_the_other_way_about_reorders_is_not_replaced() -> None:
    """A grocery reader's week: a night without --repeat-items replaced a buy-again
    champion (0.10 against its "new products only" 0.04), and its lists lost every
    reorder without a word."""
    champion = ChampionReference("2", Recipe("mf", {"regularization": 10.0}),
                                 repeat_items=True)
    verdict = gate("ndcg@10", {"ndcg@10": 0.1025, "users": 300}, POPULARITY, 0.0, champion,
                   {"ndcg@10": 0.0400}, repeat_items=False)
    check = verdict.checks[1]
    assert not verdict.passed and check.name == "not_worse_than_champion"
    assert check.reason.startswith("champion version 2 was trained with --repeat-items and "
                                   "this run without it"), check.reason
    assert "shoprec promote --force" in check.reason
    # The same way both, or unknown (a version from before): compared as ever.
    for flag in (True, None):
        same = ChampionReference("2", Recipe("mf", {"regularization": 10.0}),
                                 repeat_items=flag)
        assert gate("ndcg@10", {"ndcg@10": 0.1025, "users": 300}, POPULARITY, 0.0, same,
                    {"ndcg@10": 0.0400}, repeat_items=bool(flag)).checks[1].passed


def test_gate_notes_another_weighting_but_not_a_field_added_since() -> None:
    from shoprec.config import WeightingConfig

    now = WeightingConfig().model_dump()
    # Recorded before `repeats` existed: the same weighting (summed repeats).
    older = {k: v for k, v in now.items() if k != "repeats"}
    for recorded, noted in ((older, False), ({**now, "recency_half_life_days": 30.0}, True)):
        champion = ChampionReference("4", Recipe("ease", {"regularization": 200.0}, recorded))
        verdict = gate("ndcg@10", {"ndcg@10": 0.05}, POPULARITY, 0.05, champion,
                       {"ndcg@10": 0.05}, weighting=now)
        assert ("another event weighting" in verdict.checks[1].reason) is noted


def test_gate_fails_closed_when_the_champion_cannot_be_read() -> None:
    broken = ChampionReference(error="could not read 'm' from the MLflow registry: timeout")
    verdict = gate("ndcg@10", {"ndcg@10": 0.9}, POPULARITY, 0.05, broken)
    assert not verdict.passed and "timeout" in verdict.checks[1].reason


def test_an_unreachable_registry_is_an_error_not_an_empty_registry(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A tracking server that is down (nothing listens on the port) must not read as "no
    champion": the lookup raises, and the reference carries the reason."""
    from shoprec.registry.aliases import alias_version

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://user:secret@127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with pytest.raises(RegistryError, match="could not read 'm' from the MLflow registry"):
        alias_version("m", "champion")
    reference = champion_reference("m")
    assert reference.version is None and reference.error
    assert "secret" not in reference.error  # credentials never reach a message


@pytest.mark.slow
def test_a_missing_model_or_alias_means_no_champion(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from shoprec.registry import tracking
    from shoprec.registry.aliases import alias_version

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    assert alias_version("nothing-here", "champion") is None
    tracking.client().create_registered_model("empty")
    assert alias_version("empty", "champion") is None
    assert champion_reference("empty") == ChampionReference()


@pytest.fixture()
def two_versions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A SQLite registry with versions 1 (champion) and 2 (challenger), neither with a
    recipe: what an install registered before shoprec recorded recipes."""
    from shoprec.registry import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    client = tracking.client()
    client.create_registered_model("legacy")
    (tmp_path / "MLmodel").write_text("")  # their files, as far as an alias move looks
    for _ in range(2):
        client.create_model_version("legacy", source=str(tmp_path), tags={"gate": "pass"})
    client.set_registered_model_alias("legacy", "champion", "1")
    client.set_registered_model_alias("legacy", "challenger", "2")
    return "legacy"


def _files() -> str:
    """The folder of the fixture's versions, which holds an MLmodel (alias moves check it)."""
    from shoprec.registry import tracking

    return str(tracking.client().get_model_version("legacy", "1").source)


def test_versions_without_a_recipe_are_refused_but_can_be_forced(two_versions: str) -> None:
    """A legacy champion cannot be compared like for like: the decision fails with the
    reason, and a person can still promote deliberately (or the registry would be stuck)."""
    from shoprec.registry.aliases import alias_log, alias_version
    from shoprec.registry.promotion import (
        PromotionRefused,
        apply_promotion,
        compare_with_champion,
    )

    decision = compare_with_champion(two_versions, None, None, None, [10], "ndcg@10")
    assert not decision.passed and "cannot compare like for like" in decision.why
    assert "no readable recipe" in decision.why and "registered before" in decision.why
    with pytest.raises(PromotionRefused, match="Pass --force --reason TEXT") as refused:
        apply_promotion(decision)
    assert str(refused.value).count("--force") == 1  # the hint once, not twice
    # A version of another kind, or one no training labelled, is named for what it is.
    from shoprec.registry import tracking

    client = tracking.client()
    client.create_model_version(two_versions, source=_files(),
                                tags={"shoprec_kind": "demand-forecast"})  # version 3
    client.create_model_version(two_versions, source=_files())  # version 4, by hand
    assert "3 is a demand forecast, not a recommender" in compare_with_champion(
        two_versions, "3", None, None, [10], "ndcg@10").why
    assert "4 was not published by a shoprec training (no 'gate' tag" in \
        compare_with_champion(two_versions, "4", None, None, [10], "ndcg@10").why
    assert alias_version(two_versions, "champion") == "1"
    forced = apply_promotion(decision, force=True, reason="legacy upgrade", by="ops")
    assert forced.promoted and forced.forced
    assert alias_version(two_versions, "champion") == "2"
    assert alias_version(two_versions, "previous-champion") == "1"
    assert [m["action"] for m in alias_log(two_versions)] == ["promote", "promote"]
    # What the Models tab shows first says so, not only the training's verdict.
    described = tracking.client().get_model_version(two_versions, "2").description
    assert described.startswith("promoted (forced) to champion by ops at ")
    assert "reason: legacy upgrade" in described


def test_a_promotion_does_not_overwrite_a_champion_that_moved_meanwhile(
        two_versions: str) -> None:
    from shoprec.registry import tracking
    from shoprec.registry.aliases import alias_version
    from shoprec.registry.promotion import PromotionError, apply_promotion, decide

    decision = decide(two_versions, "2", "1", {"ndcg@10": 0.3}, {"ndcg@10": 0.2}, "ndcg@10")
    tracking.client().create_model_version(two_versions, source=_files())
    tracking.client().set_registered_model_alias(two_versions, "champion", "3")  # a nightly
    with pytest.raises(PromotionError, match="moved from version 1 to 3"):
        apply_promotion(decision)
    assert alias_version(two_versions, "champion") == "3"
    assert alias_version(two_versions, "previous-champion") is None


def _promote_2_over_1(name: str) -> None:
    """Version 2 promoted over version 1 on a better comparison (version 1 previous)."""
    from shoprec.registry.promotion import apply_promotion, decide

    apply_promotion(decide(name, "2", "1", {"ndcg@10": 0.3}, {"ndcg@10": 0.2}, "ndcg@10"))


class _ServerGone(Exception):
    """What the client raises when the tracking server went away mid-operation."""


def _fail_once(monkeypatch: pytest.MonkeyPatch, method: str, after: int = 0) -> None:
    """Make the MLflow client's ``method`` fail once, after ``after`` calls succeeded."""
    from mlflow import MlflowClient

    calls = {"n": 0}
    real = getattr(MlflowClient, method)

    def failing(self: MlflowClient, *args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == after + 1:
            raise _ServerGone(f"{method}: the tracking server went away")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, method, failing)


def test_a_promotion_that_failed_does_not_read_as_made(
        two_versions: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The promoted_* tags were written before champion moved, so a promotion whose alias
    could not be set still read as made by its person, at its time."""
    from shoprec.registry import tracking
    from shoprec.registry.aliases import alias_version
    from shoprec.registry.promotion import apply_promotion, decide

    decision = decide(two_versions, "2", "1", {"ndcg@10": 0.3}, {"ndcg@10": 0.2}, "ndcg@10")
    with monkeypatch.context() as patched:
        # previous-champion is set first, then champion: the second alias write fails.
        _fail_once(patched, "set_registered_model_alias", after=1)
        with pytest.raises(_ServerGone):
            apply_promotion(decision, by="ops")
    assert alias_version(two_versions, "champion") == "1"
    assert alias_version(two_versions, "previous-champion") is None
    tags = tracking.client().get_model_version(two_versions, "2").tags
    assert tags["promotion_decision"] == "pass"  # the check was made, and says so
    assert not {"promoted_at", "promoted_by", "promotion_forced"} & set(tags)
    promoted = apply_promotion(decision, by="ops")
    assert promoted.promoted and alias_version(two_versions, "champion") == "2"
    tags = tracking.client().get_model_version(two_versions, "2").tags
    assert tags["promoted_by"] == "ops" and tags["promotion_forced"] == "false"


def test_a_version_typed_with_a_leading_zero_is_the_registry_s_version(
        two_versions: str) -> None:
    """``promote --version 01`` passed the "already champion" check as a version of its
    own ("01" != "1"), set previous-champion to the champion itself and blocked rollback."""
    from shoprec.registry.promotion import resolve_candidate

    assert resolve_candidate(two_versions, "01") == "1"
    assert resolve_candidate(two_versions, " 2") == "2"
    assert resolve_candidate(two_versions, "+2") == "2"
    # A number past what a registry holds is no version, not a registry fault (exit 3).
    from shoprec.registry.promotion import PromotionError

    with pytest.raises(PromotionError, match="has no version 1000000000000000000000"):
        resolve_candidate(two_versions, "1000000000000000000000")


def _owner_gone(name: str) -> None:
    """Make the recorded champion move's process one that has exited, as a command that
    failed has by the time the next one runs."""
    import json

    from shoprec.registry import tracking
    from shoprec.registry.aliases import PENDING_MOVE

    gone = subprocess.Popen(["true"])
    gone.wait()
    client = tracking.client()
    record = json.loads(client.get_registered_model(name).tags[PENDING_MOVE])
    record["owner"]["pid"] = gone.pid
    client.set_registered_model_tag(name, PENDING_MOVE, json.dumps(record))


def test_a_promotion_whose_restore_failed_is_undone_by_the_next_operation(
        two_versions: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """previous-champion moved, champion could not, and putting previous-champion back
    failed too (the server gone): previous-champion was left on the serving version, and a
    rollback refused ("the champion itself") with the real previous version lost."""
    from shoprec.registry import tracking
    from shoprec.registry.aliases import PENDING_MOVE, alias_version
    from shoprec.registry.promotion import apply_promotion, check_rollback, decide, rollback

    client = tracking.client()
    client.create_model_version(two_versions, source=_files())  # version 3
    _promote_2_over_1(two_versions)
    assert (alias_version(two_versions, "champion"),
            alias_version(two_versions, "previous-champion")) == ("2", "1")
    decision = decide(two_versions, "3", "2", {"ndcg@10": 0.4}, {"ndcg@10": 0.3}, "ndcg@10")
    with monkeypatch.context() as patched:
        # previous-champion is set, champion fails, then so does every write after it.
        _fail_once(patched, "set_registered_model_alias", after=1)
        patched.setattr(type(client), "set_registered_model_alias", _gone_after(
            type(client).set_registered_model_alias, 2))
        patched.setattr(type(client), "delete_registered_model_tag", _gone_after(
            type(client).delete_registered_model_tag, 0))
        with pytest.raises(_ServerGone):
            apply_promotion(decision, by="ops")
    assert (alias_version(two_versions, "champion"),
            alias_version(two_versions, "previous-champion")) == ("2", "2")
    _owner_gone(two_versions)
    check_rollback(two_versions)  # puts previous-champion back first, then finds it
    assert alias_version(two_versions, "previous-champion") == "1"
    assert PENDING_MOVE not in client.get_registered_model(two_versions).tags
    assert rollback(two_versions, reason="bad", by="ops")["to"] == "1"
    assert alias_version(two_versions, "champion") == "1"
    assert "promoted_by" not in client.get_model_version(two_versions, "3").tags


def _gone_after(real: object, calls: int) -> object:
    """``real``, failing with :class:`_ServerGone` from its ``calls + 1``-th call on."""
    made = {"n": 0}

    def failing(*args: object, **kwargs: object) -> object:
        made["n"] += 1
        if made["n"] > calls:
            raise _ServerGone("the tracking server went away")
        return real(*args, **kwargs)  # type: ignore[operator]

    return failing


def test_a_promotion_stopped_after_champion_moved_is_finished_by_the_next_operation(
        two_versions: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Champion moved, then the server went: the version lacked promoted_* and its
    description line for good, so it read as never promoted though it served."""
    from shoprec.registry import tracking
    from shoprec.registry.aliases import PENDING_MOVE, alias_log, alias_version
    from shoprec.registry.promotion import apply_promotion, decide

    client = tracking.client()
    decision = decide(two_versions, "2", "1", {"ndcg@10": 0.3}, {"ndcg@10": 0.2}, "ndcg@10")
    with monkeypatch.context() as patched:
        # Four tags of the decision, then the alias moves and their log; the fifth tag
        # write (promoted_at) fails, and every one after it.
        patched.setattr(type(client), "set_model_version_tag", _gone_after(
            type(client).set_model_version_tag, 4))
        with pytest.raises(_ServerGone):
            apply_promotion(decision, by="ops", reason="weekly review")
    assert alias_version(two_versions, "champion") == "2"
    assert "promoted_by" not in client.get_model_version(two_versions, "2").tags
    # Another process of this machine that is still running (here: pytest's parent) may
    # still be at it: its record is left to it, and no other move may cross it.
    import json
    import os

    from shoprec.errors import RegistryError
    from shoprec.registry.aliases import finish_interrupted_move, move_champion

    record = json.loads(client.get_registered_model(two_versions).tags[PENDING_MOVE])
    record["owner"]["pid"] = os.getppid()
    client.set_registered_model_tag(two_versions, PENDING_MOVE, json.dumps(record))
    assert finish_interrupted_move(two_versions) is None
    with pytest.raises(RegistryError, match="moving legacy's champion right now"):
        move_champion(two_versions, "1", "2", "promote", "someone", "", "now")
    _owner_gone(two_versions)
    done = finish_interrupted_move(two_versions)
    assert done is not None and done["outcome"] == "finished"
    version = client.get_model_version(two_versions, "2")
    assert version.tags["promoted_by"] == "ops"
    assert version.tags["promotion_reason"] == "weekly review"
    assert version.description.startswith("promoted to champion by ops")
    assert PENDING_MOVE not in client.get_registered_model(two_versions).tags
    moves = [(m["alias"], m["from"], m["to"]) for m in alias_log(two_versions)]
    assert moves == [("previous-champion", None, "1"), ("champion", "1", "2")]
    assert finish_interrupted_move(two_versions) is None


def test_a_rollback_stopped_midway_is_finished_as_asked_by_the_next(
        two_versions: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Champion had moved back, previous-champion was left on the same version: the retry
    "rolled back" version 1 onto itself, tagged it as the rolled-back one and logged
    1 -> 1, while version 2, the one rolled back, got nothing."""
    from shoprec.registry import tracking
    from shoprec.registry.aliases import alias_log, alias_version
    from shoprec.registry.promotion import (
        PENDING_ROLLBACK,
        PromotionError,
        rollback,
    )

    client = tracking.client()
    _promote_2_over_1(two_versions)
    assert alias_version(two_versions, "champion") == "2"
    with monkeypatch.context() as patched:
        _fail_once(patched, "set_model_version_tag")  # after champion moved back
        with pytest.raises(_ServerGone):
            rollback(two_versions, reason="bad answers", by="ops")
    assert alias_version(two_versions, "champion") == "1"
    assert alias_version(two_versions, "previous-champion") == "1"
    moved = rollback(two_versions, reason="retry", by="someone else")
    assert moved["resumed"] and (moved["from"], moved["to"]) == ("2", "1")
    assert (moved["by"], moved["reason"]) == ("ops", "bad answers")
    assert alias_version(two_versions, "champion") == "1"
    assert alias_version(two_versions, "previous-champion") is None
    rolled_back = client.get_model_version(two_versions, "2").tags
    assert rolled_back["rolled_back_by"] == "ops"
    assert "rolled_back_at" not in client.get_model_version(two_versions, "1").tags
    assert PENDING_ROLLBACK not in client.get_registered_model(two_versions).tags
    champion_moves = [(m["from"], m["to"]) for m in alias_log(two_versions)
                      if m["alias"] == "champion"]
    assert champion_moves == [("1", "2"), ("2", "1")]
    with pytest.raises(PromotionError, match="no 'previous-champion'"):
        rollback(two_versions)
    # The same aliases left by another cause (no record of a rollback): refused, and why.
    client.set_registered_model_alias(two_versions, "previous-champion", "1")
    with pytest.raises(PromotionError, match="the champion itself"):
        rollback(two_versions)


def test_a_stopped_rollback_is_finished_once_though_its_version_was_deleted(
        two_versions: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped after its log entry, the resumed rollback wrote the move twice; with the
    rolled-back version deleted by hand meanwhile, every retry ended in exit 3 ("Model
    Version not found") and the record was never cleared. Both versions' descriptions say
    what happened, and a long reason no longer cuts the log's JSON."""
    from shoprec.registry import tracking
    from shoprec.registry.aliases import alias_log, alias_version
    from shoprec.registry.promotion import PENDING_ROLLBACK, rollback

    client = tracking.client()
    _promote_2_over_1(two_versions)
    long_reason = "conversion dropped " * 400  # 7,600 characters
    with monkeypatch.context() as patched:
        _fail_once(patched, "delete_registered_model_alias")  # after champion's log entry
        with pytest.raises(_ServerGone):
            rollback(two_versions, reason=long_reason, by="ops")
    assert alias_version(two_versions, "champion") == "1"
    client.delete_model_version(two_versions, "2")  # the bad version, removed in the UI
    moved = rollback(two_versions, reason="retry", by="someone else")
    assert moved["resumed"] and (moved["from"], moved["to"], moved["by"]) == ("2", "1", "ops")
    assert PENDING_ROLLBACK not in client.get_registered_model(two_versions).tags
    assert alias_version(two_versions, "previous-champion") is None
    moves = [(m["alias"], m["from"], m["to"]) for m in alias_log(two_versions)]
    assert moves == [("previous-champion", None, "1"), ("champion", "1", "2"),
                     ("champion", "2", "1"), ("previous-champion", "1", None)]
    assert alias_log(two_versions)[-1]["reason"] == long_reason[:1500]
    assert client.get_model_version(two_versions, "1").description.startswith(
        "restored to champion by ops")


def test_a_rolled_back_version_no_longer_reads_as_promoted(two_versions: str) -> None:
    from shoprec.registry import tracking
    from shoprec.registry.promotion import apply_promotion, decide, rollback

    client = tracking.client()
    apply_promotion(decide(two_versions, "2", "1", {"ndcg@10": 0.3}, {"ndcg@10": 0.2},
                           "ndcg@10"), by="ops")
    assert client.get_model_version(two_versions, "2").description.startswith("promoted")
    rollback(two_versions, reason="bad answers", by="bob")
    described = client.get_model_version(two_versions, "2").description
    assert described.startswith("rolled back (champion back to version 1) by bob at ")
    assert described.splitlines()[0].endswith(": bad answers")


def test_a_rollback_record_is_resumed_only_while_the_aliases_are_as_it_left_them(
        two_versions: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from shoprec.registry import tracking
    from shoprec.registry.aliases import alias_version
    from shoprec.registry.promotion import (
        PENDING_ROLLBACK,
        PromotionError,
        apply_promotion,
        check_rollback,
        decide,
        rollback,
    )

    client = tracking.client()

    def promote(version: str, over: str) -> None:
        apply_promotion(decide(two_versions, version, over, {"ndcg@10": 0.3},
                               {"ndcg@10": 0.2}, "ndcg@10"))

    promote("2", "1")
    # Stopped at its very last step: previous-champion already gone, the record still
    # there. The command's own check lets the next call through, which finishes it.
    with monkeypatch.context() as patched:
        _fail_once(patched, "delete_registered_model_tag")
        with pytest.raises(_ServerGone):
            rollback(two_versions, reason="first", by="ops")
    assert alias_version(two_versions, "previous-champion") is None
    check_rollback(two_versions)
    assert rollback(two_versions)["resumed"]
    assert PENDING_ROLLBACK not in client.get_registered_model(two_versions).tags
    with pytest.raises(PromotionError, match="nothing to roll back to"):
        check_rollback(two_versions)

    # A record overtaken by later moves (champion 1 again, previous-champion 3) is not
    # resumed: the rollback asked now goes back to 3.
    client.set_registered_model_tag(two_versions, PENDING_ROLLBACK, json.dumps(
        {"from": "2", "to": "1", "by": "old", "at": "then", "reason": "old"}))
    client.create_model_version(two_versions, source=_files())
    promote("3", "1")
    promote("1", "3")
    moved = rollback(two_versions, reason="now", by="ops")
    assert not moved["resumed"] and (moved["from"], moved["to"]) == ("1", "3")
    assert alias_version(two_versions, "champion") == "3"
    # A model that does not exist: said as such (not "nothing to roll back to").
    with pytest.raises(PromotionError, match="no registered model named 'no-such-model'"):
        check_rollback("no-such-model")


def test_decide_compares_only_the_metrics_both_have() -> None:
    """A rating model's rmse has no counterpart in another family's figures."""
    from shoprec.registry.promotion import decide

    decision = decide("m", "2", "1", {"ndcg@10": 0.3, "rmse": 0.9, "users": 40},
                      {"ndcg@10": 0.2, "users": 40}, "ndcg@10")
    assert decision.passed and [c.metric for c in decision.comparisons] == ["ndcg@10"]


def test_a_gap_under_the_figures_standard_error_is_said() -> None:
    """A refusal by 0.0072 where each side's error was 0.0077 read as plainly worse."""
    from shoprec.registry.promotion import decide

    close = decide("m", "2", "1", {"ndcg@10": 0.0861, "ndcg_se@10": 0.0077},
                   {"ndcg@10": 0.0933, "ndcg_se@10": 0.0079}, "ndcg@10")
    assert not close.passed
    assert close.why.endswith("(the gap, 0.0072, is smaller than the figures' own "
                              "standard error, up to 0.0079)")
    apart = decide("m", "2", "1", {"ndcg@10": 0.0327, "ndcg_se@10": 0.0039},
                   {"ndcg@10": 0.0933, "ndcg_se@10": 0.0079}, "ndcg@10")
    assert not apart.passed and "standard error" not in apart.why
    # Figures without errors (a version registered before they existed) get no clause.
    older = decide("m", "2", "1", {"ndcg@10": 0.09}, {"ndcg@10": 0.0933}, "ndcg@10")
    assert "standard error" not in older.why


def test_each_metric_is_called_better_or_worse_in_its_own_direction() -> None:
    """A lower error is better; a beyond-accuracy figure is only higher or lower."""
    from shoprec.registry.promotion import decide

    candidate = {"ndcg@10": 0.3, "rmse": 0.8, "gini@10": 0.95, "avg_popularity@10": 0.09,
                 "novelty@10": 5.0, "users": 40}
    champion = {"ndcg@10": 0.2, "rmse": 0.9, "gini@10": 0.90, "avg_popularity@10": 0.06,
                "novelty@10": 5.0, "users": 40}
    verdicts = {c.metric: c.verdict for c in
                decide("m", "2", "1", candidate, champion, "ndcg@10").comparisons}
    assert verdicts == {"ndcg@10": "better", "rmse": "better", "gini@10": "higher",
                        "avg_popularity@10": "higher", "novelty@10": "equal"}
    flipped = decide("m", "2", "1", champion, candidate, "ndcg@10")
    assert {c.metric: c.verdict for c in flipped.comparisons}["rmse"] == "worse"


def test_the_gates_sentences_add_up_and_tell_close_figures_apart() -> None:
    """The margin is written as used (x 1.125, not x 1.12), and a tie at 4 decimals that is
    no tie is printed with the digits that decide it."""
    from shoprec.registry.promotion import decide

    verdict = gate("ndcg@10", {"ndcg@10": 0.077}, {"ndcg@10": 0.0327}, 0.125,
                   ChampionReference())
    assert "0.0327 x 1.125 = 0.0368" in verdict.checks[0].reason
    champion = ChampionReference("4", Recipe("ease", {"regularization": 200.0}))
    close = gate("ndcg@10", {"ndcg@10": 0.09331}, POPULARITY, 0.0, champion,
                 {"ndcg@10": 0.09334})
    assert not close.passed and "ndcg@10 0.09331 vs 0.09334" in close.checks[1].reason
    decision = decide("m", "2", "1", {"ndcg@10": 0.09331}, {"ndcg@10": 0.09334}, "ndcg@10",
                      margin=0.125)
    assert "0.09331 < champion version 1's 0.09334 x 1.125 = 0.10501" in decision.why


def test_models_and_recipes_saved_under_an_older_parameter_name_still_work(
        tmp_path: Path) -> None:
    """ALS called its thread count num_threads before 0.1's rename to threads: a model or
    a champion recipe registered then must still load and retrain."""
    import json

    import numpy as np
    import scipy.sparse as sp

    from shoprec.models import ImplicitALS

    matrix = sp.random(40, 20, density=0.2, random_state=1, format="csr", dtype=np.float32)
    ImplicitALS(factors=4, regularization=1.0, iterations=2).fit(matrix).save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["params"]["num_threads"] = config["params"].pop("threads")
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    loaded = ImplicitALS.load(tmp_path / "m")
    assert loaded.threads == 1 and loaded.score(matrix[:2]).shape == (2, 20)
    old = Recipe("mf", {"factors": 4, "num_threads": 1, "seed": 0}, {}, None, "f" * 64, "abc")
    # Recorded before mf's BM25: it retrains on the weights as they are, as it did.
    assert old.training_params(threads=2) == {"factors": 4, "threads": 2, "seed": 0,
                                              "weighting": "none"}


def test_networks_get_the_processs_cores_and_the_others_their_share() -> None:
    """TensorFlow's thread pools are the process's, shared by every network training in it:
    sized to one candidate's share they left cores idle once the other candidates ended
    (vae, dae and cfgan side by side on Online Retail: 121.5 s with one thread, 84.0 s with
    two, identical validation figures)."""
    from shoprec.training import plan_jobs

    config = TrainingConfig(models=["popularity", "mf", "ease", "vae", "dae", "cfgan"])
    threads = {job.candidate: job.params.get("threads") for job in plan_jobs(config, None, 1, 8)}
    assert threads == {"popularity": None, "mf": 1, "ease": None, "vae": 8, "dae": 8,
                       "cfgan": 8}
    alone = {job.candidate: job.params.get("threads") for job in plan_jobs(config, None, 1)}
    assert alone["vae"] == alone["mf"] == 1  # no process figure given: the share


def test_tensorflow_pools_are_sized_for_the_networks_side_by_side(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With threads, two networks or more at once size TensorFlow's pools; else nothing does."""
    from shoprec_flows.runners import share_network_pools

    from shoprec.models import autoencoder
    from shoprec.training import networks_at_once, plan_jobs

    config = TrainingConfig(models=["popularity", "vae", "mf", "dae", "cfgan", "ease"])
    jobs = plan_jobs(config, Recipe("dae", {"epochs": 3}, {}, None, "f" * 64, "abc"), 1, 2)
    assert networks_at_once(jobs, None) == 4  # the three and a network champion's recipe
    assert networks_at_once(jobs, 2) == 2
    assert networks_at_once(plan_jobs(TrainingConfig(models=["mf", "vae"]), None, 1), None) == 1
    calls: list[tuple[int, int]] = []
    # Recorded instead of run: the pools are the process's, and this test process's
    # TensorFlow may already run (the pools themselves are tested in a process of their own).
    monkeypatch.setattr(autoencoder, "share_tensorflow_pools",
                        lambda networks, cores: calls.append((networks, cores)))
    share_network_pools(jobs, config, 1)
    share_network_pools(jobs, config.model_copy(update={"network_slots": 1}), 1)
    share_network_pools(jobs, config.model_copy(update={"task_runner": "dask"}), 1)
    share_network_pools(plan_jobs(TrainingConfig(models=["mf", "vae"]), None, 1), config)
    from shoprec_flows.runners import process_threads

    assert calls == [(4, process_threads(config, 1))]


def test_sizing_the_pools_survives_a_tensorflow_that_cannot_load(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Sizing the pools before the candidates must not end the run when TensorFlow is broken:
    the networks then fail as candidates (their own import raises), the others train."""
    from shoprec_flows.runners import share_network_pools

    from shoprec.training import plan_jobs

    config = TrainingConfig(models=["popularity", "vae", "dae"])
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # its import now raises ImportError
    with caplog.at_level(logging.WARNING, logger="shoprec_flows.runners"):
        share_network_pools(plan_jobs(config, None, 1), config)
    assert "TensorFlow could not start" in caplog.text
    assert "tensorflow" in caplog.text  # the import's own message names what failed


def test_tensorflow_pools_give_each_network_its_share_of_the_cores() -> None:
    """Set once, before the runtime starts: a network's own request no longer changes them."""
    script = """
from shoprec.models.autoencoder import _configure_tensorflow, share_tensorflow_pools
print(share_tensorflow_pools(3, 2))
_configure_tensorflow(2)  # what each network asks for when its fit starts
print(share_tensorflow_pools(1, 8))  # the runtime runs: the pools stay
"""
    shared = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, check=True)
    assert shared.stdout.split("\n")[:2] == ["(1, 2)", "(1, 2)"]
    wide = subprocess.run([sys.executable, "-c", "from shoprec.models.autoencoder import "
                           "share_tensorflow_pools as s; print(s(2, 8))"],
                          capture_output=True, text=True, timeout=120, check=True)
    assert wide.stdout.strip() == "(4, 8)"


def test_networks_train_slots_at_a_time_beside_the_other_candidates() -> None:
    """Networks wait in chains of ``network_slots``; the other candidates never wait."""
    from shoprec.registry.recipe import Recipe
    from shoprec.training import plan_jobs, start_after

    config = TrainingConfig(models=["popularity", "vae", "mf", "dae", "cfgan", "ease"])
    recipe = Recipe("dae", {"epochs": 3}, {}, None, "f" * 64, "abc")
    jobs = plan_jobs(config, recipe, 1, 2)
    assert start_after(jobs, 1) == {"dae": "vae", "cfgan": "dae", "champion-recipe": "cfgan"}
    assert start_after(jobs, 2) == {"cfgan": "vae", "champion-recipe": "dae"}
    assert start_after(jobs, 4) == start_after(jobs, None) == {}
    assert start_after(plan_jobs(TrainingConfig(models=["mf", "ease"]), None, 1), 1) == {}
    with pytest.raises(ValidationError):
        TrainingConfig(network_slots=0)
    # A waiting job holds its worker thread (Prefect resolves wait_for inside it): the pool
    # has a thread more per waiting job, so the others still train four at a time.
    from shoprec_flows.runners import task_runner_for

    assert task_runner_for(config, 1, waiting=3)._max_workers == 4 + 3
    from shoprec_flows.runners import extra_threads

    # One thread per waiting job; with the networks all at once (the default), enough for
    # the four networks (a network champion's recipe among them) to leave one to the others.
    assert extra_threads(jobs, config, start_after(jobs, 1)) == 3
    assert extra_threads(jobs, config, start_after(jobs, None)) == 1
    assert extra_threads(plan_jobs(config, None, 1, 2), config, {}) == 0  # three networks
    few = TrainingConfig(models=["mf", "ease"])  # popularity joins: the gate needs it
    assert task_runner_for(few)._max_workers == len(few.models) == 3


def test_a_sqlite_uri_with_a_query_names_its_file(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``sqlite:///...db?timeout=60`` (what one adds when the store reports "database is
    locked"): read-only commands refused it as a missing registry, and the first run made a
    lock file named ``mlflow.db?timeout=60.lock``."""
    from shoprec.errors import ConfigError
    from shoprec.registry import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db?timeout=60")
    with pytest.raises(ConfigError, match=f"no MLflow registry at {tmp_path}/mlflow.db "):
        tracking.require_store()
    tracking.experiment_id("shoprec")  # creates the store, under its lock
    tracking.require_store()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db", "mlflow.db.lock"]


def test_a_model_name_holds_one_kind(two_versions: str, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A forecast registered under the recommender's name (or set as its previous-champion
    by hand) was rolled back to, and every request then failed."""
    from shoprec.errors import ConfigError
    from shoprec.registry import tracking
    from shoprec.registry.demand import refuse_other_kind
    from shoprec.registry.promotion import PromotionError, check_rollback

    client = tracking.client()
    refuse_other_kind(two_versions, "recommender")
    refuse_other_kind("nothing-yet", "forecast")
    with pytest.raises(ConfigError, match="holds recommenders .version 1.; a forecast cannot"):
        refuse_other_kind(two_versions, "forecast")
    client.create_model_version(two_versions, source=_files(),
                                tags={"shoprec_kind": "demand-forecast"})  # version 3
    client.set_registered_model_alias(two_versions, "previous-champion", "3")
    with pytest.raises(PromotionError, match="version 3, a demand forecast, while the "
                                             "champion .version 1. is a recommender"):
        check_rollback(two_versions)
    client.create_registered_model("demand")
    client.create_model_version("demand", source=_files(),
                                tags={"shoprec_kind": "demand-forecast", "gate": "fail"})
    client.create_model_version("demand", source=_files())  # left unlabelled by a killed run
    refuse_other_kind("demand", "forecast")  # no champion: its latest labelled version says
    with pytest.raises(ConfigError, match="holds demand forecasts"):
        refuse_other_kind("demand", "recommender")
    # The command line says so before the run's work (it said so after the backtest or
    # the training), and does not create a store that is not there.
    from shoprec_cli.app import _refuse_other_kind_now

    with pytest.raises(ConfigError, match="holds demand forecasts"):
        _refuse_other_kind_now("demand", "recommender")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/new/mlflow.db")
    _refuse_other_kind_now("demand", "recommender")
    assert not (tmp_path / "new").exists()


def test_a_version_whose_gate_found_another_shops_data_is_not_promoted_plainly(
        two_versions: str) -> None:
    """A reader's: north's version, trained into this shop's name and kept challenger by
    its gate (shoppers ~0% in common), became champion through a plain `promote`: the
    promotion's catalogue comparison could not judge catalogues that far apart in size."""
    from shoprec.registry import tracking
    from shoprec.registry.aliases import alias_version
    from shoprec.registry.promotion import PromotionRefused, apply_promotion, compare_with_champion
    from shoprec.registry.publish import GATE_CHAMPION_TAG, GATE_DATA_TAG

    client = tracking.client()
    client.set_model_version_tag(two_versions, "2", GATE_DATA_TAG, "same_shoppers,enough_items")
    client.set_model_version_tag(two_versions, "2", GATE_CHAMPION_TAG, "1")
    decision = compare_with_champion(two_versions, None, None, None, [10], "ndcg@10")
    assert not decision.passed
    assert ("version 2's own gate found its data unlike champion version 1's (same_shoppers, "
            "enough_items failed") in decision.why
    with pytest.raises(PromotionRefused):
        apply_promotion(decision)
    assert alias_version(two_versions, "champion") == "1"
    # Judged against another champion than today's: that verdict says nothing now.
    client.set_model_version_tag(two_versions, "2", GATE_CHAMPION_TAG, "7")
    assert "own gate" not in compare_with_champion(two_versions, None, None, None, [10],
                                                   "ndcg@10").why


def test_a_promotion_says_when_a_version_was_gated_on_another_metric(
        two_versions: str) -> None:
    from shoprec.registry import tracking
    from shoprec.registry.promotion import other_metric_note

    client = tracking.client()
    assert other_metric_note(two_versions, ["2", "1"], "ndcg@10") == ""  # none recorded
    client.set_model_version_tag(two_versions, "1", "primary_metric", "ndcg@10")
    client.set_model_version_tag(two_versions, "2", "primary_metric", "recall@20")
    assert other_metric_note(two_versions, ["2", "1"], "ndcg@10") == (
        "; note: version 2 on recall@20 was gated on another metric than this decision's "
        "ndcg@10 (--primary-metric)")
    assert other_metric_note(two_versions, ["2", "1"], "recall@20").startswith(
        "; note: version 1 on ndcg@10 was")


def test_a_plain_promote_does_not_put_back_a_rolled_back_challenger(
        two_versions: str) -> None:
    from shoprec.registry.promotion import (
        PromotionError,
        resolve_candidate,
        rollback,
    )

    _promote_2_over_1(two_versions)
    rollback(two_versions, reason="bad answers", by="ops")
    with pytest.raises(PromotionError, match=r"version 2, was rolled back by ops at .* "
                                             r"\(bad answers\); .* --version 2"):
        resolve_candidate(two_versions, None)
    assert resolve_candidate(two_versions, "2") == "2"  # named: the person's choice


def test_a_rollback_of_a_model_that_does_not_exist_says_so(two_versions: str) -> None:
    """A typo in the name read "has no 'previous-champion' alias" (from the Prefect form)."""
    from shoprec.registry.promotion import PromotionError, check_rollback

    with pytest.raises(PromotionError, match="no registered model named 'legcy'"):
        check_rollback("legcy")
    with pytest.raises(PromotionError, match="legacy has no 'previous-champion' alias"):
        check_rollback(two_versions)


@pytest.fixture()
def another_process():
    """A live process on this machine, to own a record "under way" (not this one)."""
    import subprocess
    import sys
    import time

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    time.sleep(0.2)
    yield child
    child.kill()
    child.wait()


def _record_of(process, **fields: str) -> str:
    import json

    from shoprec.registry.aliases import now
    from shoprec.registry.runs import process_space

    return json.dumps({**fields, "by": "alice", "at": now(),
                       "owner": {**process_space(), "pid": process.pid}})


def test_a_promotion_and_a_rollback_under_way_refuse_each_other(
        two_versions: str, another_process) -> None:
    """Found by a second reader: only promotions checked for one another. A promotion
    crossed a live rollback (champion on the promoted version, previous-champion gone,
    the rollback's person told the old version served), and a rollback during a live
    promotion was told the aliases were "left by an operation stopped midway"."""
    from shoprec.registry import tracking
    from shoprec.registry.aliases import (
        PENDING_MOVE,
        PENDING_ROLLBACK,
        ChampionBusyError,
        alias_version,
    )
    from shoprec.registry.promotion import check_rollback, rollback

    client = tracking.client()
    _promote_2_over_1(two_versions)
    # A promotion in another live process, stopped between its two aliases.
    client.set_registered_model_tag(two_versions, PENDING_MOVE, _record_of(
        another_process, version="3", **{"from": "2"}, previous="1", action="promote",
        reason=""))
    for attempt in (lambda: rollback(two_versions, reason="bad", by="bob"),
                    lambda: check_rollback(two_versions)):
        with pytest.raises(ChampionBusyError, match="a promote by alice"):
            attempt()
    assert (alias_version(two_versions, "champion"),
            alias_version(two_versions, "previous-champion")) == ("2", "1")
    client.delete_registered_model_tag(two_versions, PENDING_MOVE)

    # A rollback in another live process, stopped after champion moved back.
    client.set_registered_model_tag(two_versions, PENDING_ROLLBACK, _record_of(
        another_process, **{"from": "2"}, to="1", reason="conversion dropped"))
    client.set_registered_model_alias(two_versions, "champion", "1")
    with pytest.raises(ChampionBusyError, match="a rollback by alice"):
        _promote_2_over_1(two_versions)
    # Nor is it "resumed" by a second rollback while its own process still runs.
    with pytest.raises(ChampionBusyError):
        rollback(two_versions, reason="two", by="carol")
    assert alias_version(two_versions, "previous-champion") == "1"
    assert PENDING_ROLLBACK in client.get_registered_model(two_versions).tags
    # Once its process has ended, the next rollback finishes it as it was asked.
    another_process.kill()
    another_process.wait()
    moved = rollback(two_versions, reason="two", by="carol")
    assert moved["resumed"] and moved["reason"] == "conversion dropped"


def test_a_training_that_meets_a_live_move_keeps_its_version_as_challenger(
        two_versions: str, another_process) -> None:
    """Found by a second reader: the nightly run's gate passed while a person's promotion
    was under way; the refusal withdrew the whole version and the run ended in exit 3."""
    from shoprec.registry import tracking
    from shoprec.registry.aliases import PENDING_MOVE, alias_version
    from shoprec.registry.publish import GateCheck, GateVerdict, _label

    client = tracking.client()
    client.create_model_version(two_versions, source=_files())  # version 3, just registered
    client.set_registered_model_tag(two_versions, PENDING_MOVE, _record_of(
        another_process, version="2", **{"from": "1"}, previous=None, action="promote",
        reason=""))
    verdict = GateVerdict(True, "ndcg@10", [GateCheck("beats_champion", True, 0.3, 0.2,
                                                      "better")], champion_version="1")
    passed, _, aliases = _label(two_versions, "3", verdict, {"candidate": "mf"})
    assert not passed and aliases == ["challenger"]
    tags = client.get_model_version(two_versions, "3").tags
    assert tags["gate"] == "fail"
    assert "champion_unchanged: fail (a promote by alice" in tags["gate_checks"]
    assert alias_version(two_versions, "champion") == "1"
    assert alias_version(two_versions, "challenger") == "3"


def test_two_rollbacks_begun_together_do_not_both_go_ahead(
        two_versions: str, another_process, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by the change's second reader: both wrote the same record, the second over
    the first, and both moved the aliases. The one whose record was overwritten gives way,
    and leaves the other's record alone."""
    from mlflow import MlflowClient

    from shoprec.registry import tracking
    from shoprec.registry.aliases import PENDING_ROLLBACK, ChampionBusyError, alias_version
    from shoprec.registry.promotion import rollback

    _promote_2_over_1(two_versions)
    theirs = _record_of(another_process, **{"from": "2"}, to="1", reason="theirs")
    real = MlflowClient.set_registered_model_tag

    def and_then_theirs(self: MlflowClient, name: str, key: str, value: str) -> None:
        real(self, name, key, value)
        if key == PENDING_ROLLBACK and value != theirs:  # the other wrote just after
            real(self, name, key, theirs)

    with monkeypatch.context() as patched:
        patched.setattr(MlflowClient, "set_registered_model_tag", and_then_theirs)
        with pytest.raises(ChampionBusyError, match="a rollback by alice"):
            rollback(two_versions, reason="mine", by="bob")
    tags = tracking.client().get_registered_model(two_versions).tags
    assert tags[PENDING_ROLLBACK] == theirs
    assert alias_version(two_versions, "champion") == "2"  # this one moved nothing


def test_a_taken_over_rollback_is_under_way_while_its_new_process_runs(
        another_process) -> None:
    """Found by a second reader: a resumed rollback kept the stopped one's time, before its
    own process started, so its record read as abandoned and a promotion could cross it."""
    import json
    from datetime import UTC, datetime, timedelta

    from shoprec.registry.aliases import _abandoned, now

    before = (datetime.now(UTC) - timedelta(minutes=2)).isoformat(timespec="seconds")
    record = json.loads(_record_of(another_process, **{"from": "2"}, to="1", reason=""))
    record["at"] = before  # the stopped rollback's time, before this process started
    assert _abandoned(record)
    assert not _abandoned({**record, "taken_at": now()})


def test_registry_records_fit_every_backends_tag_column(
        two_versions: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a second reader: on PostgreSQL (varchar(5000)) a forced promotion with a
    1,500-character reason failed: its record carried the reason three times, and 900
    accented letters became 16,872 characters of escapes. Records now fit in 5,000."""
    from shoprec.registry import tracking
    from shoprec.registry.aliases import TAG_LIMIT, alias_version, record_text
    from shoprec.registry.promotion import apply_promotion, decide

    assert len(record_text({"reason": "é" * 9000, "by": "ops", "nested": {"a": "x" * 6000}})
               ) <= TAG_LIMIT
    # The copies are cut before the reason itself; a record that cannot fit says so (the
    # change's reader found a loop that never ended).
    import json

    cut = json.loads(record_text({"reason": "r" * 3000, "description": "d" * 3000}))
    assert len(cut["reason"]) == 3000 and len(cut["description"]) < 2000
    with pytest.raises(ValueError, match="cannot be cut"):
        record_text({"at": "2026-12-07T10:00:00", "owner": {f"k{i}": "x" * 30
                                                            for i in range(300)}})
    # What identifies the operation is never cut (a 46-character host name was, and the
    # record no longer named its own process: the move refused itself), and a reason in
    # another alphabet keeps as much as fits (it was cut to 20 letters).
    host = "ip-172-31-20-143.eu-central-1.compute.internal"
    kept = json.loads(record_text({"reason": "ж" * 500, "description": "ж" * 1500,
                                   "owner": {"host": host, "pid": 7}, "at": "now"}))
    assert kept["owner"] == {"host": host, "pid": 7}
    assert len(kept["reason"]) == 500 and kept["description"].endswith("…")
    alone = json.loads(record_text({"reason": "ж" * 1000, "by": "ops"}))
    assert 700 < len(alone["reason"]) < 1000
    recorded: list[str] = []
    from mlflow import MlflowClient

    real = MlflowClient.set_registered_model_tag

    def checked(self: MlflowClient, name: str, key: str, value: str) -> None:
        recorded.append(value)
        real(self, name, key, value)

    with monkeypatch.context() as patched:
        patched.setattr(MlflowClient, "set_registered_model_tag", checked)
        apply_promotion(decide(two_versions, "2", "1", {"ndcg@10": 0.1}, {"ndcg@10": 0.2},
                               "ndcg@10"), force=True, reason="é" * 1500, by="ops")
    assert alias_version(two_versions, "champion") == "2"
    assert recorded and max(len(value) for value in recorded) <= TAG_LIMIT
    assert tracking.client().get_model_version(two_versions, "2").tags["promoted_by"] == "ops"


def test_a_missing_alias_names_the_registry_and_what_it_holds(two_versions: str) -> None:
    """"Run `shoprec train` first" misled whoever just had (a failed gate leaves only a
    challenger), and named MLFLOW_TRACKING_URI's default, not the registry read."""
    from shoprec.registry import tracking
    from shoprec.registry.loading import no_alias_message

    said = no_alias_message(two_versions, "nosuch")
    assert tracking.display_uri() in said
    assert "it has challenger, champion: pass --alias challenger" in said
    other = no_alias_message("north-recommender", "champion")
    assert f"which holds {two_versions}: pass --registered-model-name" in other


def test_a_record_dated_ahead_by_another_machines_clock_blocks_ten_minutes_only() -> None:
    """A second reader's machine with a clock 6 hours fast: its promotion record read as
    under way for 6 hours and 10 minutes, refusing every promotion and the nightly gate."""
    from datetime import UTC, datetime, timedelta

    from shoprec.registry.aliases import _abandoned

    def record(minutes: float) -> dict:
        at = (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat(timespec="seconds")
        return {"at": at, "owner": {"host": "othermachine", "pid": 1}}

    assert _abandoned(record(6 * 60))  # ahead by hours: the rule's span has passed
    assert not _abandoned(record(5))  # a few minutes either way: maybe under way
    assert not _abandoned(record(-5))
    assert _abandoned(record(-11))
