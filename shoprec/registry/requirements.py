"""The pip requirements of a registered model, inferred from what loading it imports.

MLflow rebuilds a model's environment from the requirements logged with it
(``mlflow models serve``, ``mlflow.pyfunc.spark_udf``), so they must name everything the
model imports: a network family needs TensorFlow and Keras, EASE does not. Read from the
source, not listed by hand: the imports at the top of every shoprec module that loading a
model reaches from the pyfunc wrapper, plus every import inside the model class (and its
shoprec base classes), where the families import their heavy libraries lazily.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import inspect
import logging
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

logger = logging.getLogger(__name__)

#: Where loading a registered model starts: the pyfunc wrapper MLflow imports, the bundle
#: and the engine that answers its requests.
ENTRY_MODULES = ("shoprec.registry.pyfunc_model", "shoprec.registry.served",
                 "shoprec.registry.bundle",
                 "shoprec.serving.engine")


def _source(module: str) -> tuple[ast.Module, Path] | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # "from package.module import name": not a module
        return None
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    path = Path(spec.origin)
    return ast.parse(path.read_text(encoding="utf-8")), path


def _imported(nodes: list[ast.stmt] | ast.AST, module: str, top_only: bool) -> set[str]:
    """Modules imported by ``nodes``: at the top level only, or anywhere inside them."""
    found: set[str] = set()
    walk = nodes if top_only and isinstance(nodes, list) else ast.walk(
        nodes if isinstance(nodes, ast.AST) else ast.Module(body=nodes, type_ignores=[]))
    package = module.rsplit(".", 1)[0]
    for node in walk:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                found.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                found.add(node.module)
                # "from shoprec.models import x" may name a submodule.
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, (ast.If, ast.Try)) and top_only:
            # Guarded imports at the top level (try: import x / if ...: import y).
            found |= _imported(node, module, top_only=False)
    return found


def _external_modules(start: list[str], classes: list[type]) -> set[str]:
    """Top-level names of the non-shoprec modules that loading and scoring a model uses."""
    external: set[str] = set()
    seen: set[str] = set()
    queue = list(start)
    for cls in classes:
        for klass in inspect.getmro(cls):
            if not klass.__module__.startswith("shoprec"):
                continue
            parsed = _source(klass.__module__)
            if parsed is None:
                continue
            tree, _ = parsed
            for node in tree.body:
                if isinstance(node, ast.ClassDef) and node.name == klass.__name__:
                    queue.extend(_imported(node, klass.__module__, top_only=False))
            queue.append(klass.__module__)
    while queue:
        name = queue.pop()
        top = name.split(".")[0]
        if top != "shoprec":
            external.add(top)
            continue
        if name in seen:
            continue
        seen.add(name)
        parsed = _source(name)
        if parsed is None:
            continue
        tree, _ = parsed
        queue.extend(_imported(tree.body, name, top_only=True))
        # A package's __init__ runs first when one of its modules is imported.
        parent = name.rsplit(".", 1)[0]
        if parent != name:
            queue.append(parent)
    return {name for name in external
            if name not in sys.stdlib_module_names and name != "__future__"}


#: Which installed distributions provide each top-level module, read once per process.
_DISTRIBUTIONS: Mapping[str, list[str]] | None = None
_DISTRIBUTIONS_LOCK = threading.Lock()


def installed_distributions() -> Mapping[str, list[str]]:
    """Which installed distributions provide each top-level module (read once a process).

    Reading it opens every installed distribution's file list (about a second). A caller
    that arrives while another thread reads it waits for that reading instead of repeating
    it (:func:`shoprec.registry.runs.warm_up_in_background` starts one early).
    """
    global _DISTRIBUTIONS
    with _DISTRIBUTIONS_LOCK:
        if _DISTRIBUTIONS is None:
            _DISTRIBUTIONS = importlib.metadata.packages_distributions()
        return _DISTRIBUTIONS


def model_requirements(classes: list[type]) -> list[str]:
    """Pinned pip requirements (``name==version``) of a model made of ``classes``.

    Args:
        classes: The recommender classes a bundle holds (the winner, its popularity
            fallback, the search model when there is one).

    Returns:
        Sorted requirement lines; shoprec itself is not among them (the model carries its
        own copy of the package).
    """
    found: set[str] = set()
    for module in sorted(_external_modules(list(ENTRY_MODULES), classes)):
        names = installed_distributions().get(module)
        if not names:
            logger.warning("no installed distribution provides %r; not in the requirements",
                           module)
            continue
        found.update(name for name in names if name.lower() != "shoprec")
    return sorted(f"{name}=={importlib.metadata.version(name)}" for name in found)
