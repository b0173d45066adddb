"""The package layering: each part of reprodistill imports only parts below it (read from the source, so a new
upward import fails here, not in a user's import order)."""

import ast
import sys
from pathlib import Path

import pytest

import reprodistill

ROOT = Path(reprodistill.__file__).parent
# Lower number = lower layer; a module may import its own layer and the ones below.
LAYERS = {
    "errors": 0, "registry": 0, "util": 0,
    "config": 1,
    "data": 2,
    "models": 3,
    "reprogram": 4, "losses": 4, "peft": 4,
    "features": 5,
    "methods": 6,
    "engine": 7,
    "bench": 8,
    "cli": 9, "__main__": 9, "__init__": 9,
}  # fmt: skip
# Known upward edges (none: config checks no method names; reprodistill.methods.check_config does).
ALLOWED_UPWARD: set[tuple[str, str]] = set()


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("reprodistill."):
            out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("reprodistill.")}
    return out


def test_every_package_imports_only_its_layer_or_below():
    upward = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        unit = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        assert unit in LAYERS, f"{rel}: place the new package {unit!r} in LAYERS"
        for target in _imports(path):
            assert target in LAYERS, f"{rel} imports reprodistill.{target}: place it in LAYERS"
            if LAYERS[target] > LAYERS[unit] and (unit, target) not in ALLOWED_UPWARD:
                upward.append(f"{rel} -> {target}")
    assert not upward, f"imports from a higher layer: {upward}"


def test_methods_never_import_the_engine():
    for path in (ROOT / "methods").glob("*.py"):
        assert not {"engine", "bench", "cli"} & _imports(path), path


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _module_graph() -> dict[str, set[str]]:
    """module -> the reprodistill modules it imports anywhere in its file (function-level imports too)."""
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("reprodistill"):
                for alias in node.names:  # `from pkg import submodule` imports the submodule
                    sub = f"{node.module}.{alias.name}"
                    graph[mod].add(sub if sub in files else node.module)
            elif isinstance(node, ast.Import):
                graph[mod] |= {a.name for a in node.names if a.name in files}
        graph[mod].discard(mod)
    return graph


def test_no_import_cycles_between_modules():
    """No module imports (directly or through others) a module that imports it back; a package's __init__ may
    import its own modules, so edges into a package's __init__ from inside that package are the cycle to avoid."""
    graph = _module_graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []

    def visit(mod: str, path: list[str]) -> None:
        state[mod] = 1
        for target in sorted(graph[mod]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_cycle_check_finds_a_cycle(tmp_path, monkeypatch):
    """The check itself can fail: two modules that import each other."""
    pkg = tmp_path / "reprodistill"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from reprodistill.b import x\n")
    (pkg / "b.py").write_text("def x():\n    from reprodistill.a import y\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", pkg)
    with pytest.raises(AssertionError, match="reprodistill.a -> reprodistill.b -> reprodistill.a"):
        test_no_import_cycles_between_modules()
