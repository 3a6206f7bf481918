"""A package that installs anywhere: the wheel built from the repository, installed
outside it, validates and trains from any folder (suites and sample are package data), and
each family's model names what it needs to be served."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from shoprec.models import CANDIDATES, Popularity

ROOT = Path(__file__).resolve().parents[2]
NEURAL = {"vae", "dae", "cfgan"}


@pytest.mark.parametrize("name", [name for name in CANDIDATES if name != "blend"])
def test_each_familys_requirements_name_what_it_imports(name: str) -> None:
    from shoprec.registry.requirements import model_requirements

    names = {line.split("==")[0].lower().replace("_", "-")
             for line in model_requirements([CANDIDATES[name], Popularity])}
    assert {"numpy", "scipy", "pandas", "mlflow"} <= names
    assert ("tensorflow-cpu" in names or "tensorflow" in names) == (name in NEURAL)
    assert ("keras" in names) == (name in NEURAL)
    assert ("implicit" in names) == (name == "mf")
    assert "shoprec" not in names


@pytest.mark.parametrize("warm_up_fails", [False, True])
def test_publishing_waits_for_the_warm_ups_reading_of_the_packages(
        monkeypatch: pytest.MonkeyPatch, warm_up_fails: bool) -> None:
    """A publisher arriving during the warm-up's reading waits for it instead of reading
    again; when that reading fails, the publisher reads again and succeeds."""
    import importlib.metadata
    import threading
    import time

    from shoprec.registry import requirements, runs

    real = importlib.metadata.packages_distributions()
    reading, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def held_read() -> object:
        calls.append(threading.current_thread().name)
        if len(calls) == 1:  # the warm-up's reading, held until the publisher is waiting
            reading.set()
            release.wait(30)
            if warm_up_fails:
                raise OSError("a distribution's files could not be read")
        return real

    monkeypatch.setattr(importlib.metadata, "packages_distributions", held_read)
    monkeypatch.setattr(requirements, "_DISTRIBUTIONS", None)
    warm = runs.warm_up_in_background()
    assert reading.wait(60)
    found: list[list[str]] = []
    publisher = threading.Thread(target=lambda: found.append(
        requirements.model_requirements([CANDIDATES["mf"], Popularity])))
    publisher.start()
    time.sleep(0.3)
    assert publisher.is_alive()  # waiting for the reading under way, not reading itself
    release.set()
    publisher.join(60)
    warm.join(60)
    assert not publisher.is_alive() and not warm.is_alive()
    assert calls[0] == "shoprec-warm-up"
    assert len(calls) == (2 if warm_up_fails else 1)
    assert any(line.startswith("implicit==") for line in found[0])


def test_the_warm_up_imports_the_charting_library() -> None:
    """The candidates' charts find matplotlib imported, on the backend that draws to files."""
    script = ("import sys; from shoprec.registry.runs import warm_up_in_background as w; "
              "w().join(60); import matplotlib; "
              "print('matplotlib.pyplot' in sys.modules, matplotlib.get_backend())")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.lower().split() == ["true", "agg"]


def test_the_warm_up_does_mlflows_one_time_work_of_logging_a_model() -> None:
    """The first model published finds MLflow's map of installed modules to distributions
    built (its requirement check) and GitPython imported (its commit tag)."""
    script = ("import sys; from shoprec.registry.runs import warm_up_in_background as w; "
              "w().join(120); from mlflow.utils import requirements_utils as r; "
              "print(r._PACKAGES_TO_MODULES is not None, 'git' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=180, check=True)
    # Without a git executable GitPython cannot be imported, by the warm-up or by MLflow.
    git = "true" if shutil.which("git") else "false"
    assert done.stdout.lower().split() == ["true", git]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy of the project's files: setuptools builds in the source folder, and
    # a stale build/ there could hand old modules to the wheel.
    source = tmp_path_factory.mktemp("source")
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in listed.splitlines():
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "--wheel-dir", str(out), str(source)], check=True, timeout=300,
                   capture_output=True)
    return next(out.glob("shoprec-*.whl"))


def test_the_wheel_holds_the_suites_and_the_sample_and_no_generic_packages(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(
        (".dist-info", ".data"))}
    assert tops == {"shoprec", "shoprec_flows", "shoprec_tasks", "shoprec_cli",
                    "shoprec_expectations", "shoprec_sample"}
    assert "shoprec_expectations/raw_interactions.json" in names
    assert "shoprec/serving/storefront.html" in names  # the page shoprec serve serves
    assert "shoprec_sample/online_retail_sample.csv.gz" in names


@pytest.mark.integration
def test_the_installed_wheel_validates_and_trains_from_any_folder(wheel: Path,
                                                                  tmp_path: Path) -> None:
    """Installed with pip into a fresh virtual environment and run through its own console
    script, from a folder that is not the repository. The environment reaches this one's
    dependencies through a path file (installing TensorFlow again would take minutes), and
    not its editable checkout: a plain path line does not run the checkout's ``.pth`` hook."""
    fresh = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True,
                   timeout=120)
    python = fresh / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; "
                           "print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                    "--no-deps", "--quiet", str(wheel)], check=True, timeout=300,
                   capture_output=True)
    env = {**{k: v for k, v in os.environ.items()
              if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    where = tmp_path / "anywhere"
    where.mkdir()

    def shoprec(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(fresh / "bin" / "shoprec"), *args], cwd=where, env=env,
                              capture_output=True, text=True, timeout=600, check=False)

    located = subprocess.run([str(python), "-c", "import shoprec, shoprec_flows; "
                              "print(shoprec.__file__, shoprec_flows.__file__)"],
                             cwd=where, env=env, capture_output=True, text=True, check=True)
    assert all(path.startswith(site) for path in located.stdout.split()), located.stdout
    done = shoprec("validate")  # the bundled sample and the suites, from the package
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "valid in" in done.stdout
    done = shoprec("train", "--models", "popularity,ease", "--summary-json", "summary.json")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (where / "summary.json").exists()


def test_every_make_target_the_readme_and_ci_name_has_a_recipe() -> None:
    """A ``.PHONY`` target whose rule was lost makes ``make lint`` succeed doing nothing."""
    root = Path(__file__).resolve().parents[2]
    for target, expected in (("lint", "ruff check"), ("test-fast", "not integration"),
                             ("test", "pytest"), ("run", "shoprec train")):
        done = subprocess.run(["make", "-n", "-W", "pyproject.toml", target], cwd=root,
                              capture_output=True, text=True, timeout=60, check=False)
        assert expected in done.stdout, (target, done.stdout, done.stderr)
