"""The import rules of docs/architecture.md, checked on the package's source.

Every `import` of every module (at the top or inside a function) is mapped to the part it comes from
and the part it goes to; an arrow the picture forbids fails with the file, the line and the rule.
"""

from __future__ import annotations

import ast
import functools
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "compactvid"

# Part of a module: the first prefix that matches its dotted name (below `compactvid.`).
PARTS = [
    ("cli", ("cli", "commands")),
    ("config", ("config", "flags", "ignored_flags", "fully_compact")),
    ("layers", ("layers",)),
    ("models", ("models",)),
    ("data", ("data",)),
    ("metrics", ("metrics",)),
    ("experiments", ("experiments", "segment_experiment", "frontier", "plotting")),
    ("errors", ("errors",)),
    ("package", ("__init__",)),
]
# Everything else (train, run_dir, distributed, evaluate, inference, checkpoint, losses, export, ...):
LOOPS = "loops"

# part -> the compactvid parts it may import (itself always allowed).
ALLOWED = {
    "layers": set(),
    "models": {"layers", "errors"},
    "data": {"config", "errors"},
    "metrics": {"errors"},
    "config": {"models", "errors"},  # Config holds the model's arguments (models/args.py)
    "errors": set(),
    "loops": {"config", "layers", "models", "data", "metrics", "errors", LOOPS},
    "experiments": {"config", "data", "models", "metrics", "errors", LOOPS},
    "cli": {"cli", "config", "layers", "models", "data", "metrics", "experiments", "errors", LOOPS, "package"},
    "package": {"errors", "layers", "models", "metrics", LOOPS},
}
# Layers are usable anywhere torch is: no third-party import but torch.
LAYERS_THIRD_PARTY = {"torch"}


def _part(dotted: str) -> str:
    inner = dotted.split(".", 1)[1] if "." in dotted else "__init__"
    head = inner.split(".")[0]
    for part, prefixes in PARTS:
        if head in prefixes:
            return part
    return LOOPS


@functools.cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text())


def _dotted(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


def _imports(path: Path, dotted: str) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every import in the module `dotted` at `path`."""
    tree = _tree(path)
    package = dotted.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name == "compactvid":  # `from compactvid import x`: x is the module imported
                found += [(node.lineno, f"compactvid.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, name))
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_the_package_is_found():
    assert len(MODULES) > 20


def forbidden_arrows(path: Path, dotted: str) -> list[str]:
    """The imports of module `dotted` (source at `path`) that the picture forbids, one line each."""
    source_part = _part(dotted)
    broken = []
    for line, name in _imports(path, dotted):
        top = name.split(".")[0]
        if top == "compactvid":
            target = _part(name)
            if target != source_part and target not in ALLOWED[source_part]:
                broken.append(f"{path.name}:{line} {source_part} imports {name} ({target})")
        elif source_part == "layers" and top not in sys.stdlib_module_names | LAYERS_THIRD_PARTY | {"__future__"}:
            broken.append(f"{path.name}:{line} layers import {name}: layers import only torch")
    return broken


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_picture(path):
    broken = forbidden_arrows(path, _dotted(path))
    assert not broken, "arrows docs/architecture.md forbids:\n" + "\n".join(broken)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_the_cli_reads_argv(path):
    if _part(_dotted(path)) == "cli":
        return
    uses = [node.lineno for node in ast.walk(_tree(path))
            if isinstance(node, ast.Attribute) and node.attr == "argv"
            and isinstance(node.value, ast.Name) and node.value.id == "sys"]
    assert not uses, f"{path.name} reads sys.argv at lines {uses}: only cli.py and commands/ know about argv"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_opens_with_its_concept(path):
    docstring = ast.get_docstring(_tree(path))
    assert docstring and docstring.strip(), f"{path} has no module docstring naming its concept"


def test_a_forbidden_arrow_is_caught(tmp_path):
    """The checker itself: a model importing the loader, or a layer importing numpy, is reported."""
    model = tmp_path / "fake.py"
    model.write_text("from ..data.loader import make_loader\nfrom compactvid import layers\n")
    assert forbidden_arrows(model, "compactvid.models.fake") == [
        "fake.py:1 models imports compactvid.data.loader (data)"]
    layer = tmp_path / "layer.py"
    layer.write_text("import math\nimport numpy as np\nfrom . import circulant\n")
    assert forbidden_arrows(layer, "compactvid.layers.layer") == [
        "layer.py:2 layers import numpy: layers import only torch"]
