"""A shop upgrades shoprec and serves versions published by the older one.

MLflow runs the wrapper file logged with each version (models from code). An older
shoprec's wrapper did not know today's serving settings: it served shoppers' histories
with explanations off, ignored live sessions and --diversity, and answered a fault of the
server's as the client's mistake, with a traceback. `create_app` serves such a version with
the installed wrapper."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import scipy.sparse as sp

from shoprec.features.idmap import IdMap
from shoprec.models import Popularity
from shoprec.registry.bundle import ModelBundle

# The wrapper as shoprec wrote it before it had serving settings (before e717477).
OLDER_WRAPPER = '''
import mlflow
from mlflow.pyfunc import PythonModel


class ShoprecModel(PythonModel):
    def load_context(self, context):
        from shoprec.registry.bundle import ModelBundle

        self.bundle = ModelBundle.load(context.artifacts["bundle"])

    def predict(self, context, model_input, params=None):
        return self.bundle.predict(model_input)


mlflow.models.set_model(ShoprecModel())
'''


def _post(app, payload: dict) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/invocations", content=json.dumps(payload),
                                     headers={"Content-Type": "application/json"})
    return asyncio.run(go())


@pytest.fixture()
def older_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A version logged with the older wrapper; returns its model URI."""
    import mlflow

    history = sp.csr_matrix((np.random.default_rng(1).random((20, 12)) < 0.3)
                            .astype(np.float32))
    model = Popularity().fit(history)
    bundle = ModelBundle(model=model, users=IdMap([f"u{i}" for i in range(20)]),
                         items=IdMap([f"i{i}" for i in range(12)]), history=history,
                         fallback=model, meta={"model": "popularity"})
    bundle_dir = bundle.save(tmp_path / "bundle")
    wrapper = tmp_path / "pyfunc_model.py"
    wrapper.write_text(OLDER_WRAPPER)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=str(wrapper),
                                       artifacts={"bundle": str(bundle_dir)})
    return info.model_uri


def test_a_version_logged_by_an_older_shoprec_follows_the_servers_settings(
        older_version: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shoprec.privacy import SUPPRESSIONS_ENV
    from shoprec.serving.engine import DIVERSITY_ENV, EXPLANATIONS_ENV
    from shoprec.serving.server import MODEL_URI_ENV, create_app
    from shoprec.serving.sessions import SESSIONS_ENV

    suppressions = tmp_path / "suppressions.jsonl"
    suppressions.write_text("")
    monkeypatch.setenv(MODEL_URI_ENV, older_version)
    monkeypatch.setenv(EXPLANATIONS_ENV, "0")  # a server on a public address
    monkeypatch.setenv(DIVERSITY_ENV, "0.5")
    monkeypatch.setenv(SESSIONS_ENV, str(tmp_path / "sessions.sqlite"))
    monkeypatch.setenv(SUPPRESSIONS_ENV, str(suppressions))
    app = create_app()
    bundle = app.bundle
    assert bundle is not None
    assert bundle.explanations is False and bundle.diversity == 0.5
    assert bundle.sessions is not None

    answer = _post(app, {"dataframe_records": [{"user_id": "u1", "explain": True}]})
    assert answer.status_code == 400, answer.text
    assert "does not explain" in answer.text

    # A fault of the server's through MLflow's handler: a 503, without a traceback.
    suppressions.write_text("not a record\n")
    answer = _post(app, {"dataframe_records": [{"user_id": "u1"}], "params": {}})
    assert answer.status_code == 503, answer.text
    assert "Traceback" not in answer.text


def _saved_bundle(tmp_path: Path) -> Path:
    history = sp.csr_matrix((np.random.default_rng(1).random((20, 12)) < 0.3)
                            .astype(np.float32))
    from shoprec.models import EASE

    model = EASE(regularization=10.0).fit(history)
    bundle = ModelBundle(model=model, users=IdMap([f"u{i}" for i in range(20)]),
                         items=IdMap([f"i{i}" for i in range(12)]), history=history,
                         fallback=Popularity().fit(history), meta={"model": "ease"})
    return bundle.save(tmp_path / "bundle")


@pytest.mark.parametrize("change, words", [
    ("family", "its model is 'slim', which this shoprec does not know"),
    ("parameter", "the parameter(s) l2_old_name, which this shoprec does not know"),
    ("meta", "its meta.json names no model"),
])
def test_a_version_this_shoprec_cannot_read_says_what_to_do(
        tmp_path: Path, change: str, words: str) -> None:
    """Found by a second reader: a family, a parameter or a meta key of another shoprec
    version ended `recommend`, `batch` and `serve` in "internal error: KeyError" (exit 3)
    with no advice; now a usage error (exit 2) naming what to do."""
    from shoprec.errors import ConfigError, UnreadableModelError

    folder = _saved_bundle(tmp_path)
    meta = json.loads((folder / "meta.json").read_text())
    config = json.loads((folder / "model" / "config.json").read_text())
    if change == "family":
        meta["model"] = "slim"
    elif change == "parameter":
        config["params"]["l2_old_name"] = 3
    else:
        del meta["model"]
    (folder / "meta.json").write_text(json.dumps(meta))
    (folder / "model" / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnreadableModelError) as caught:
        ModelBundle.load(folder)
    assert isinstance(caught.value, ConfigError)  # exit 2
    message = str(caught.value)
    assert words in message
    assert "shoprec rollback, shoprec promote --version N" in message


def test_a_remote_stores_bundle_is_copied_into_a_folder_removed_at_exit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a second reader: against a tracking server, each `batch` and `recommend`
    left a whole bundle (shoppers' histories too) in a temporary folder of MLflow's."""
    import atexit

    from shoprec.registry import loading, tracking

    class Client:
        source = "file:///srv/mlartifacts/models/m-1/artifacts"

        def get_model_version_download_uri(self, name: str, version: str) -> str:
            return self.source

    client = Client()
    monkeypatch.setattr(tracking, "client", lambda: client)
    registered: list[tuple] = []
    monkeypatch.setattr(atexit, "register", lambda *call, **kw: registered.append(call))
    assert loading._copy_folder("shop", "1") is None  # read in place
    client.source = "mlflow-artifacts:/1/models/m-1/artifacts"
    folder = loading._copy_folder("shop", "1")
    assert folder is not None and Path(folder).is_dir()
    assert registered and registered[0][1] == folder  # removed when the process exits
    Path(folder).rmdir()
