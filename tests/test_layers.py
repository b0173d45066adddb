"""The package layering: each part of reprodistill imports only parts below it (read from the source, so a new
upward import fails here, not in a user's import order)."""

import ast
from pathlib import Path

import reprodistill

ROOT = Path(reprodistill.__file__).parent
# Lower number = lower layer; a module may import its own layer and the ones below.
LAYERS = {
    "errors": 0, "registry": 0, "util": 0,
    "config": 1,
    "data": 2,
    "models": 3,
    "reprogram": 4, "distill": 4, "peft": 4,
    "features": 5,
    "methods": 6,
    "engine": 7,
    "bench": 8,
    "cli": 9, "__main__": 9, "__init__": 9,
}  # fmt: skip
# Known upward edges, to be removed (issue 14): config.validate looks method names and options up in the registry.
ALLOWED_UPWARD = {("config", "methods")}


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
