"""The package reads one way: no two subpackages import each other, in either direction.

Counted from the source, imports inside functions and under ``TYPE_CHECKING`` included,
so a cycle cannot hide in a function body.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

import moodshift

ROOT = Path(moodshift.__file__).parent


def _unit(path: Path) -> str:
    """The subpackage (or top-level module) a file belongs to."""
    return path.relative_to(ROOT).parts[0].removesuffix(".py")


def _imported_units(path: Path) -> set[str]:
    module = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    package = module if module[-1] == "__init__" else module[:-1]
    if package[-1] == "__init__":
        package = package[:-1]
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                names.append(".".join(base + ([node.module] if node.module else [])))
            else:
                names.append(node.module or "")
    return {n.split(".")[1] for n in names if n.startswith("moodshift.")}


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        unit = _unit(path)
        graph[unit] |= _imported_units(path) - {unit}
    return graph


def test_the_graph_sees_function_level_imports(tmp_path, monkeypatch):
    # The check is only as good as its parser: a cycle whose one edge hides in a function
    # body (or under TYPE_CHECKING) must still show.
    pkg = tmp_path / "moodshift"
    for sub in ("a", "b"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("from moodshift.b.y import f\n")
    (pkg / "b" / "y.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import x\n"
        "def f():\n    from moodshift.a.x import g\n    return g\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", pkg)
    graph = import_graph()
    assert graph["a"] == {"b"} and graph["b"] == {"a"}


def test_no_two_subpackages_import_each_other():
    graph = import_graph()
    mutual = sorted(
        f"{a} <-> {b}" for a, targets in graph.items() for b in targets if a < b and a in graph[b]
    )
    assert mutual == [], f"subpackages that import each other: {mutual}"


def test_the_model_layer_sits_below_its_users():
    users = {"mining", "training", "evaluation", "retrieval", "serving", "bench", "cli"}
    assert import_graph()["model"] & users == set()


def _private_imports() -> list[str]:
    """``module: from X import _name`` for every private name a module takes from another.

    A private submodule imported inside its own package (``from moodshift.mining import
    _topk`` in ``moodshift.mining.neighbors``) is that package's own business.
    """
    found = []
    for path in ROOT.rglob("*.py"):
        module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        package = module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if not source.startswith("moodshift"):
                continue
            for alias in node.names:
                name = alias.name
                if not name.startswith("_") or name.startswith("__"):
                    continue
                own_submodule = source == package and (ROOT.parent / source.replace(".", "/")
                                                       / f"{name}.py").is_file()  # fmt: skip
                if not own_submodule:
                    found.append(f"{module}: from {source} import {name}")
    return sorted(found)


def test_the_private_import_check_sees_one(tmp_path, monkeypatch):
    # The check must catch a private name taken from another module.
    pkg = tmp_path / "moodshift"
    (pkg / "a").mkdir(parents=True)
    (pkg / "a" / "x.py").write_text("from moodshift.b.y import _helper\n")
    (pkg / "a" / "z.py").write_text("from moodshift.a import _kernels\n")
    (pkg / "a" / "_kernels.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", pkg)
    assert _private_imports() == ["moodshift.a.x: from moodshift.b.y import _helper"]


def test_no_module_imports_a_private_name_of_another():
    assert _private_imports() == []
