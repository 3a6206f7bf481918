"""The arrows of DESIGN.md point one way: command line -> flows -> tasks -> shoprec, and
inside the core tuning -> models, never models -> evaluation or tuning."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "shoprec"


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def _offending(folder: Path, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found = {}
    for path in sorted(folder.rglob("*.py")):
        bad = sorted(m for m in _imports(path) if m.split(".")[0] in forbidden
                     or any(m == f or m.startswith(f + ".") for f in forbidden))
        if bad:
            found[str(path.relative_to(CORE.parent))] = bad
    return found


def test_the_models_do_not_import_evaluation_or_tuning() -> None:
    assert _offending(CORE / "models", ("shoprec.evaluation", "shoprec.tuning")) == {}


@pytest.mark.parametrize("module", ["shoprec.models", "shoprec.models.autoencoder",
                                    "shoprec.models.gan"])
@pytest.mark.slow
def test_importing_a_family_loads_no_evaluation(module: str) -> None:
    code = (f"import sys, {module}; "
            "print(sorted(m for m in sys.modules if m.startswith(('shoprec.evaluation', "
            "'shoprec.tuning'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def test_the_core_never_imports_the_orchestration_or_the_command_line() -> None:
    forbidden = ("prefect", "prefect_dask", "flows", "tasks", "shoprec_flows", "shoprec_tasks",
                 "shoprec_cli", "typer")
    assert _offending(CORE, forbidden) == {}


def test_tasks_never_import_flows_or_the_command_line() -> None:
    tasks = CORE.parent / "tasks"
    assert _offending(tasks, ("flows", "shoprec_flows", "shoprec_cli")) == {}


def test_every_core_package_is_installed() -> None:
    import tomllib

    project = tomllib.loads((CORE.parent / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(project["tool"]["setuptools"]["packages"])
    found = {".".join(path.parent.relative_to(CORE.parent).parts)
             for path in CORE.rglob("__init__.py")}
    assert found - listed == set(), "add them to [tool.setuptools] packages"
