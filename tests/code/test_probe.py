"""benchmarks/probe.py: the machine-speed figure printed beside every benchmark's wall time."""

from __future__ import annotations

import importlib.util
import inspect
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = ROOT / "benchmarks" / "probe.py"


def test_probe_prints_one_timing_per_repeat() -> None:
    done = subprocess.run([sys.executable, str(PROBE), "--size", "64", "--products", "2",
                           "--repeats", "4"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"\d+\.\d\d( \d+\.\d\d){3}\n", done.stdout), done.stdout


def test_probe_measures_what_the_recorded_figures_measured() -> None:
    # RESULTS.md's probe figures since the twenty-seventh session are forty products of a
    # 1,500² float32 matrix, three times: other defaults would not compare with them.
    spec = importlib.util.spec_from_file_location("probe", PROBE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    defaults = inspect.signature(module.probe).parameters
    assert defaults["size"].default == 1500
    assert defaults["products"].default == 40
    assert defaults["repeats"].default == 3
    assert module.describe([0.8, 1.234]) == "0.80 1.23"


def test_probe_refuses_an_empty_measurement() -> None:
    done = subprocess.run([sys.executable, str(PROBE), "--repeats", "0"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert "must be at least 1" in done.stderr
    assert "Traceback" not in done.stderr
