"""The shape of the code base: no import cycles between ablate's modules, only Optuna's public API,
modules small enough to read in one sitting. These fail when a change breaks the architecture."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ablate"
MAX_LINES = 500  # target ~400; study/spec.py and train.py are the two above it


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> set[str]:
    """Every ablate module ``path`` imports, at module level or inside functions."""
    tree = ast.parse(path.read_text())
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != here:
                found.add(name)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state, stack = [], {}, []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_no_import_cycles_between_modules():
    # A package's __init__ re-exports its modules, so importing "ablate.study" means "some module of
    # it"; edges into a package __init__ from its own modules are the re-export, not a dependency.
    graph = {m: {d for d in _imports(p) if not (m.startswith(d + ".") and MODULES[d].name == "__init__.py")}
             for m, p in MODULES.items()}
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def _private_optuna_uses(source: str) -> list[str]:
    """Imports of optuna's underscored modules/names, and underscored attributes used on anything but
    ``self``/``cls`` in a module that uses optuna."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("optuna"):
            if any(p.startswith("_") for p in node.module.split(".")) or any(a.name.startswith("_") for a in node.names):
                found.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names
                      if a.name.startswith("optuna") and any(p.startswith("_") for p in a.name.split("."))]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls", "ctx")):
                found.append(f"line {node.lineno}: ._{node.attr.lstrip('_')}")
    return found


@pytest.mark.parametrize("name", [m for m, p in MODULES.items() if "optuna" in p.read_text()])
def test_only_optunas_public_api(name):
    assert _private_optuna_uses(MODULES[name].read_text()) == []


def test_the_private_api_check_catches_what_it_should():
    bad = ("from optuna.storages._heartbeat import is_heartbeat_enabled\n"
           "storage.set_trial_state_values(trial._trial_id, state)\n"
           "grids = optuna.samplers.GridSampler(space)._all_grids\n")
    assert len(_private_optuna_uses(bad)) == 3
    assert _private_optuna_uses("study.tell(t.number, state=TrialState.FAIL)\nself._x = 1\n") == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_readable_in_one_sitting(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it by concern"
