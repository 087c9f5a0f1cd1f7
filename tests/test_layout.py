"""The package layout: which modules sit at the top, and imports that only point down the layers
(read from the source, so a new import that breaks the architecture fails here)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gem_sam"
# part -> layer: a module may import its own part, any lower layer, and the helpers at the top (layer 0)
LAYERS = {"naming": 1, "sam": 1, "labelling": 2, "evaluation": 2, "video": 3, "export": 4, "review": 5, "cli": 6}
HELPERS = {"atomic", "devices", "images", "mask_ops", "paths", "ray_runtime", "run_store", "weights"}
ENTRY_MODULES = {
    "label",
    "label_video",
    "evaluate",
    "evaluate_dense",
    "import_reviewed",
    "serve",
}  # python -m gem_sam.<name>, calling into cli/
MAX_HELPERS = 8


def part_of(module: str) -> str:
    """``gem_sam.labelling.pipeline`` -> ``labelling``; a helper -> its name; the package root -> ``gem_sam``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "gem_sam"


def layer(part: str) -> float:
    if part in HELPERS:
        return 0
    if part == "gem_sam":  # the package root (its __version__): only the command line, above it, imports it
        return LAYERS["cli"] - 0.5
    return LAYERS[part]


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every gem_sam import in a source file."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module.split(".")[:-1]  # the package a relative import starts from (for __init__ too)
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # "from . import x": x is a module when a file or package of that name exists, else an attribute
            names = [target] if node.module else [submodule_or_package(target, a.name) for a in node.names]
            found += [(node.lineno, name) for name in names if name.split(".")[0] == "gem_sam"]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "gem_sam"]
    return found


def submodule_or_package(package: str, name: str) -> str:
    folder = PACKAGE.parent.joinpath(*package.split("."))
    return f"{package}.{name}" if (folder / f"{name}.py").exists() or (folder / name).is_dir() else package


def sources() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if path.name != "__main__.py")


def test_top_of_the_package_holds_only_entries_and_helpers() -> None:
    top = {path.stem for path in PACKAGE.glob("*.py")}
    assert top - {"__init__", "__main__"} - ENTRY_MODULES == HELPERS
    assert len(HELPERS) <= MAX_HELPERS
    assert {path.name for path in PACKAGE.iterdir() if path.is_dir() and (path / "__init__.py").exists()} == set(LAYERS)
    for name in ENTRY_MODULES:
        source = (PACKAGE / f"{name}.py").read_text()
        assert len(source.splitlines()) <= 10 and f"from .cli.{name} import main" in source


@pytest.mark.parametrize("path", sources(), ids=lambda path: str(path.relative_to(PACKAGE)))
def test_imports_point_down_the_layers(path: Path) -> None:
    relative = path.relative_to(PACKAGE)
    if len(relative.parts) == 1:
        if relative.stem in ENTRY_MODULES or relative.stem == "__init__":
            return  # the public API and the python -m entries sit above every part
        own = relative.stem
    else:
        own = relative.parts[0]
    wrong = [
        f"line {line}: {target}"
        for line, target in imported_modules(path)
        if part_of(target) != own and (layer(part_of(target)) >= layer(own) and part_of(target) not in HELPERS)
    ]
    assert not wrong, f"{relative} ({own}, layer {layer(own)}) imports from its own layer or above: {wrong}"
