"""Parameters as the Prefect UI's form sends them: a value MLflow or Dask would refuse
after the data was prepared (or the whole training) is refused at once, naming its field."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from shoprec.config import (
    BatchConfig,
    ForecastConfig,
    PromotionConfig,
    SplitConfig,
    TrainingConfig,
    registry_name,
)
from shoprec.errors import ConfigError


@pytest.mark.parametrize("name", ["shop/recs", "shop:recs", "", "   ", ".", "..", "a/../b"])
@pytest.mark.parametrize("model", [TrainingConfig, PromotionConfig, ForecastConfig,
                                   BatchConfig])
def test_a_registered_model_name_mlflow_refuses_is_refused_by_its_field(
        model: type, name: str) -> None:
    with pytest.raises(ValidationError, match="registered_model_name"):
        model(registered_model_name=name)


def test_names_mlflow_accepts_pass_unchanged() -> None:
    for name in ("shoprec-recommender", "shop recs", "Shop_2.v3", "été"):
        assert registry_name(name) == name
        assert TrainingConfig(registered_model_name=name).registered_model_name == name


@pytest.mark.parametrize("model", [TrainingConfig, ForecastConfig])
def test_a_blank_or_overlong_experiment_is_refused(model: type) -> None:
    for name in ("", "  ", "x" * 501):
        with pytest.raises(ValidationError, match="experiment"):
            model(experiment=name)
    assert model(experiment="x" * 500).experiment == "x" * 500


@pytest.mark.parametrize(("address", "words"), [
    ("scheduler:8786x", "8786x"), ("foo://host:8786", "unknown address scheme")])
def test_a_dask_address_dask_cannot_read_is_refused(address: str, words: str) -> None:
    with pytest.raises(ValidationError, match="dask_address") as raised:
        TrainingConfig(task_runner="dask", dask_address=address)
    assert words in str(raised.value)


def test_dask_addresses_dask_reads_pass() -> None:
    for address in ("tcp://scheduler:8786", "scheduler:8786", "tcp://[::1]:8786"):
        assert TrainingConfig(dask_address=address).dask_address == address
    assert TrainingConfig(dask_address=" ").dask_address is None


def test_the_forecasts_side_folders_are_beside_its_folder_never_inside(tmp_path, monkeypatch
                                                                       ) -> None:
    """`.`, `./` or `..` as the forecast's folder named `._quarantine`: hidden, and inside
    the data set that is read back whole."""
    from shoprec.config import ForecastConfig

    monkeypatch.chdir(tmp_path)
    assert ForecastConfig(output_dir="runs/f/").quarantine_root == "runs/f_quarantine"
    assert ForecastConfig(output_dir="x").category_root == "x_by_category"
    for here in (".", "./"):
        assert ForecastConfig(output_dir=here).quarantine_root == f"{tmp_path}_quarantine"
    assert ForecastConfig(output_dir="..").category_root == f"{tmp_path.parent}_by_category"
    assert ForecastConfig(output_dir="x", quarantine_dir="").quarantine_root == ""
    assert ForecastConfig(output_dir="x", quarantine_dir="q").quarantine_root == "q"


def test_quotes_are_refused_where_versions_are_registered_only() -> None:
    """MLflow's filters cannot name a model with a quote (a second reader's point), so no
    run registers under one; a model registered so before stays usable to read and move."""
    for name in ("o'brien-recs", 'say "recs"'):
        for model in (TrainingConfig, ForecastConfig):
            with pytest.raises(ValidationError, match="without quotes"):
                model(registered_model_name=name)
        assert PromotionConfig(registered_model_name=name).registered_model_name == name
        assert BatchConfig(registered_model_name=name).registered_model_name == name



@pytest.mark.parametrize("split", [SplitConfig(validation_days=0),
                                   SplitConfig(method="random", validation_fraction=0),
                                   SplitConfig(method="leave-last", validation_n=0)],
                         ids=["temporal", "random", "leave-last"])
def test_a_run_that_chooses_needs_a_validation_part(split: SplitConfig) -> None:
    """With no validation part every candidate scored 0 there and popularity, listed first,
    was published over a model four times better on test (exit 0, a warning only)."""
    from shoprec.config import check_selection

    option = {"temporal": "--validation-days", "random": "--validation-fraction",
              "leave-last": "--validation-n"}[split.method]
    with pytest.raises(ConfigError, match=f"{option} 0 leaves no validation part.*"
                       r"2 candidates \(popularity, mf\)"):
        check_selection(split, TrainingConfig(models=["mf"]))
    check_selection(split, TrainingConfig(models=["popularity"]))  # nothing to choose
    check_selection(split.model_copy(update={"validation_days": 30, "validation_n": 1,
                                             "validation_fraction": 0.1}),
                    TrainingConfig(models=["mf"]))


def test_artifact_keys_are_each_models_own() -> None:
    """A reader's: "Shop A" and "shop-a" shared a key, and "магазин" the default's."""
    from shoprec_tasks import artifact_key

    from shoprec.config import DEFAULT_MODEL_NAME

    keys = {name: artifact_key("shoprec-leaderboard", name, DEFAULT_MODEL_NAME)
            for name in (DEFAULT_MODEL_NAME, "shop-a", "Shop A", "shop_a", "магазин", "店舗")}
    assert keys[DEFAULT_MODEL_NAME] == "shoprec-leaderboard"
    assert keys["shop-a"] == "shoprec-leaderboard-shop-a"
    assert len(set(keys.values())) == len(keys)
    assert all(re.fullmatch(r"[a-z0-9-]+", key) for key in keys.values())


def test_map_pairs_split_only_before_a_name_and_equals() -> None:
    from shoprec_cli.app import _parse_map

    assert _parse_map(["user_id=Kunde,value=Menge, Stk.,items.title=Name"]) == {
        "user_id": "Kunde", "value": "Menge, Stk.", "items.title": "Name"}
    # A key in another case is a key (refused later as unknown), not part of a column.
    assert _parse_map(["user_id=customer,Item_ID=sku"]) == {"user_id": "customer",
                                                             "Item_ID": "sku"}


def test_a_secret_block_name_asks_for_pseudonyms_and_a_key_there_is_not_repeated() -> None:
    """A reader's, from the Prefect form: a block named without `pseudonymize` trained on
    raw ids (and the MLflow run recorded the name), and a key typed where the block's name
    belongs was repeated four times in the run's state message and logs."""

    from shoprec.config import DataConfig

    assert DataConfig(pseudonym_secret="shop-north-key").pseudonymize is True
    assert DataConfig(pseudonym_secret="  ").pseudonymize is False  # empty: none named
    # Checked where the block is read, not by the parameters' validation: Prefect logs the
    # input of a parameter it refuses (a reader found the key twice in a serve log).
    from shoprec_tasks.data import resolve_pseudonym_key

    from shoprec.config import check_block_name
    from shoprec.errors import ConfigError

    key = "Sup3rS3cret_Key+pa55word/0123456789"
    assert DataConfig(pseudonym_secret=key).pseudonymize is True
    for typed in (key, "3f9a" * 16):  # `openssl rand -hex 32`: lower-case, digits, no dash
        with pytest.raises(ConfigError, match="not the key itself") as refused:
            resolve_pseudonym_key(DataConfig(pseudonym_secret=typed))
        assert typed not in str(refused.value)
    check_block_name("shop-north-key")
    # On the command line too, before any flow run records it (a second reader found it
    # in the temporary server's database).
    from shoprec_cli.app import app
    from typer.testing import CliRunner

    done = CliRunner().invoke(app, ["train", "--pseudonym-secret", key])
    assert done.exit_code == 2 and "not the key itself" in done.output
    assert key not in done.output


def test_a_group_given_in_part_keeps_the_deployments_other_values() -> None:
    """A reader's: `prefect deployment run ... --params '{"training": {"models": [...]}}'`
    replaced the whole group, and north's run was registered as shoprec-recommender."""
    from shoprec_flows.parameters import overlay

    saved = {"registered_model_name": "north-recommender", "models": ["popularity", "mf"],
             "ks": [10, 20]}
    given = TrainingConfig(models=["popularity", "ease"])
    merged = overlay(saved, given, "training")
    assert merged.registered_model_name == "north-recommender" and merged.ks == [10, 20]
    assert merged.models == ["popularity", "ease"]
    # The form sends whole groups: nothing of the deployment's is left to keep.
    whole = TrainingConfig.model_validate(saved)
    assert overlay(saved, whole, "training") is whole
    assert overlay(None, given, "training") is given  # no deployment, or none saved
    # Nested groups too (a second reader's: a run giving ease's regularisation reset mf's
    # factors the deployment had set).
    nested = overlay({"params": {"mf": {"factors": 128}, "ease": {"regularization": 300.0}}},
                     TrainingConfig(params={"ease": {"regularization": 500.0}}), "training")
    chosen = nested.params.model_dump(exclude_unset=True)
    assert chosen["mf"]["factors"] == 128 and chosen["ease"]["regularization"] == 500.0
    with pytest.raises(ValidationError):  # merged values are checked again
        overlay({"ks": [10]}, TrainingConfig(primary_metric="ndcg@20"), "training")


def test_a_run_naming_another_shops_model_than_its_deployment_is_warned_about(
        caplog: pytest.LogCaptureFixture) -> None:
    """A reader's: `run_deployment(..., parameters={"training": TrainingConfig(...)})` sends
    every field, defaults included, and north's run registered as shoprec-recommender."""
    from shoprec_flows.parameters import overlay

    whole = TrainingConfig.model_validate(TrainingConfig(models=["ease"]).model_dump())
    with caplog.at_level("WARNING", logger="shoprec_flows.parameters"):
        overlay({"registered_model_name": "north-recommender"}, whole, "training")
    assert "the run sets registered_model_name to 'shoprec-recommender' where the " \
        "deployment has 'north-recommender'" in caplog.text


@pytest.mark.integration
def test_a_deployments_run_merges_each_group_with_the_deployments(prefect_api: str) -> None:
    """The same through Prefect: a deployment on the test server, a run of it given one
    field of a group, run as a worker runs it."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow
    from shoprec_flows.parameters import with_deployment_values

    @flow(name="shoprec-parameters-probe")
    def probe(training: TrainingConfig = TrainingConfig()) -> dict:
        return with_deployment_values(training=training)["training"].model_dump(mode="json")

    with get_client(sync_client=True) as client:
        deployment = client.create_deployment(
            flow_id=client.create_flow(probe), name="north",
            parameters={"training": {"registered_model_name": "north-recommender",
                                     "models": ["popularity", "mf"]}})
        run = client.create_flow_run_from_deployment(
            deployment, parameters={"training": {"models": ["ease"]}})
    assert run.parameters == {"training": {"models": ["ease"]}}  # Prefect's merge: by name
    got = run_flow(probe, flow_run=run, parameters=run.parameters)
    assert got["registered_model_name"] == "north-recommender"
    assert got["models"] == ["popularity", "ease"]  # popularity, the baseline, always
    assert probe() == TrainingConfig().model_dump(mode="json")  # no deployment: as given


def test_a_batch_folder_given_as_a_url_is_refused_before_anything_is_written(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader's: `batch --output-dir s3://bucket/recs` ended in "internal error" and left
    a local folder `s3:/bucket/recs` behind."""
    from shoprec_cli.app import app
    from typer.testing import CliRunner

    with pytest.raises(ValidationError, match="write it locally, then copy"):
        BatchConfig(output_dir="s3://bucket/recs")
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(app, ["batch", "--output-dir", "s3://bucket/recs"])
    assert done.exit_code == 2 and "write it locally" in done.output, done.output
    assert list(tmp_path.iterdir()) == []


def test_a_family_named_without_its_hyperparameters_is_refused_naming_the_step(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader adding a family: a name registered without its CandidateParams field
    failed 20 s into the run with "internal error: KeyError: 'knn'"."""
    import shoprec.config as config

    monkeypatch.setattr(config, "DEFAULT_MODELS", (*config.DEFAULT_MODELS, "knn"))
    with pytest.raises(ValidationError, match="knn has no hyperparameters declared: add a "
                                              "field to CandidateParams"):
        TrainingConfig(models=["popularity", "knn"])
