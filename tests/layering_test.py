"""Imports point one way, down the layers (../shared/DESIGN.md):

    benchmarks, notebooks  >  configs, launch  >  papers  >  core  >  kernels_pallas

A module may import its own layer or any layer below it, never one above. `core/` also defines no absl flags
(the launch plumbing lives in `launch/`). Every import statement counts, including lazy ones inside functions.
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RANK = {"kernels_pallas": 0, "core": 1, "papers": 2, "configs": 3, "launch": 3, "benchmarks": 4, "notebooks": 4}
RULE = ("layering rule: imports point down — benchmarks/notebooks > configs/launch > papers > core > "
        "kernels_pallas; a module never imports a layer above its own")


def _python_files():
    for package in RANK:
        for directory, _, names in os.walk(os.path.join(ROOT, package)):
            for name in sorted(names):
                if name.endswith(".py"):
                    yield os.path.join(directory, name)


def imported_top_packages(path: str) -> list[tuple[int, str]]:
    """(line, first dotted component) of every absolute import in the file."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def layering_violations(path: str) -> list[str]:
    relative = os.path.relpath(path, ROOT)
    own = relative.split(os.sep)[0]
    return [f"{relative}:{line} imports {package} ({RULE})" for line, package in imported_top_packages(path)
            if package in RANK and RANK[package] > RANK[own]]


def test_there_are_modules_in_every_library_layer():
    layers = {os.path.relpath(p, ROOT).split(os.sep)[0] for p in _python_files()}
    assert {"kernels_pallas", "core", "papers", "configs", "launch", "benchmarks"} <= layers


def test_imports_point_down_the_layers():
    violations = [v for path in _python_files() for v in layering_violations(path)]
    assert not violations, "\n".join(violations)


def test_core_defines_no_absl_flags():
    offenders = [os.path.relpath(path, ROOT) for path in _python_files()
                 if os.path.relpath(path, ROOT).startswith("core" + os.sep)
                 and any(word in open(path, encoding="utf-8").read() for word in ("flags.DEFINE", "config_flags"))]
    assert not offenders, f"core/ must define no absl flags (they belong in launch/): {offenders}"


@pytest.mark.parametrize("source, package", [("core/x.py", "papers"), ("core/x.py", "configs"),
                                             ("papers/a/x.py", "configs"), ("kernels_pallas/k.py", "core"),
                                             ("papers/a/x.py", "benchmarks"), ("core/x.py", "launch")])
def test_the_rule_catches_an_upward_import(tmp_path, source, package):
    path = tmp_path / source
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"def f():\n    from {package} import something\n")
    own = source.split("/")[0]
    found = [(line, p) for line, p in imported_top_packages(str(path)) if p in RANK and RANK[p] > RANK[own]]
    assert found == [(2, package)]
