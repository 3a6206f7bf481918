"""benchmarks/probe.py: the machine-speed figure printed beside every benchmark's wall time."""

from __future__ import annotations

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


def test_probe_refuses_an_empty_measurement() -> None:
    done = subprocess.run([sys.executable, str(PROBE), "--repeats", "0"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert "must be at least 1" in done.stderr
    assert "Traceback" not in done.stderr
