"""The package's layers: every import (lazy ones too) runs from a layer to itself or one below.

Top to bottom, following the data: the commands; the restorer pool and the live server; training
and evaluation; the data they share (faces, call damage, scenes); the pipeline stages; the
restorer factory; the restorer implementations; the ``Restorer`` contract; files, paths, device.
The top-level ``osdface_rtc/__init__.py`` (the public API) may re-export from any layer.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "osdface_rtc"

#: Top to bottom; a module may import from its own layer and the layers below it.
LAYERS: list[tuple[str, ...]] = [
    ("cli", "commands", "__main__"),
    ("scale",),  # the restorer pool (server side) and its benches; uses rtc's client peers
    ("rtc",),
    ("train",),
    ("evaluate",),
    ("data",),
    ("pipeline",),
    ("restorers",),  # load_restorer: a spec -> one of the implementations below
    ("model",),
    ("restore",),  # the Restorer contract, the classical and remote restorers
    ("io", "paths", "device"),
]

#: Largest source module, in lines (a module with one job reads in one sitting).
MAX_LINES = 450


def layer_of(parts: tuple[str, ...]) -> int | None:
    head = parts[0] if parts else ""
    for i, names in enumerate(LAYERS):
        if head in names:
            return i
    return None


def imports(path: Path) -> list[tuple[int, tuple[str, ...]]]:
    """(line, target module path inside osdface_rtc) for every import of the package."""
    rel = path.relative_to(PKG).with_suffix("").parts
    here = rel[:-1] if rel[-1] != "__init__" else rel[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                target = base + tuple(node.module.split(".")) if node.module else base
                if not node.module:  # from . import x  -> the names are modules or attributes
                    for alias in node.names:
                        out.append((node.lineno, base + (alias.name,)))
                    continue
                out.append((node.lineno, target))
            elif node.module and node.module.split(".")[0] == "osdface_rtc":
                out.append((node.lineno, tuple(node.module.split(".")[1:])))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "osdface_rtc":
                    out.append((node.lineno, tuple(alias.name.split(".")[1:])))
    return out


def sources() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if p != PKG / "__init__.py")


def test_every_module_has_a_layer():
    missing = [str(p.relative_to(PKG)) for p in sources()
               if layer_of(p.relative_to(PKG).with_suffix("").parts) is None]
    assert not missing, f"modules outside every layer (add them to LAYERS): {missing}"


def test_imports_run_downward():
    upward = []
    for path in sources():
        own = layer_of(path.relative_to(PKG).with_suffix("").parts)
        for line, target in imports(path):
            theirs = layer_of(target)
            if own is not None and theirs is not None and theirs < own:
                upward.append(f"{path.relative_to(PKG)}:{line} -> {'.'.join(target)} "
                              f"({LAYERS[own][0]} imports {LAYERS[theirs][0]})")
    assert not upward, "imports from a lower layer up to a higher one:\n" + "\n".join(upward)


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(PKG)))
def test_module_size(path: Path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(PKG)} has {n} lines (> {MAX_LINES}): split it by job"
