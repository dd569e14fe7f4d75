"""The report's figures, drawn only when stale.

A figure is stale when its file is missing or its key changed: the key hashes the figure's data (the spec's
arguments), the drawing code (figures.py, figures_extra.py: by syntax tree, through codehash, so a comment or a
reworded docstring redraws nothing) and the matplotlib version. Each figure is drawn into a temporary file and
renamed over its path, so a reader (Typst, the zip) sees the old figure or the whole new one, never half of it.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..atomic import write_text
from ..codehash import hash_files

CACHE_FILE = ".figures-cache.json"
DRAWING_CODE = (Path(__file__).with_name("figures.py"), Path(__file__).with_name("figures_extra.py"))


@dataclass(frozen=True)
class FigureSpec:
    """One figure: the file it becomes under figures/, the function that draws it, and that function's data
    (everything the drawing depends on besides the drawing code and the matplotlib version)."""

    file: str
    draw: Callable[..., Path]
    args: tuple


def code_fingerprint() -> str:
    """Hash of the drawing code and the matplotlib version: a change of either redraws every figure."""
    from importlib import metadata

    try:
        mpl = metadata.version("matplotlib")
    except metadata.PackageNotFoundError:  # pragma: no cover - matplotlib is a dependency
        mpl = "?"
    return hashlib.sha256((hash_files(list(DRAWING_CODE)) + mpl).encode()).hexdigest()


def figure_key(spec: FigureSpec, fingerprint: str) -> str:
    data = json.dumps([spec.file, spec.draw.__name__, spec.args], sort_keys=True, default=str)
    return hashlib.sha256((fingerprint + data).encode()).hexdigest()


def read_cache(out: Path) -> dict[str, str]:
    try:
        return json.loads((out / CACHE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def draw_stale(specs: list[FigureSpec], out: Path) -> dict[str, bool]:
    """Draw the figures whose file is missing or whose key changed; returns {file: redrawn}. The cache file is
    written after each figure, so an interrupted run redraws only what it did not finish."""
    fingerprint = code_fingerprint()
    cache = read_cache(out)
    redrawn = {}
    for spec in specs:
        key = figure_key(spec, fingerprint)
        path = out / spec.file
        redrawn[spec.file] = not (cache.get(spec.file) == key and path.is_file())
        if not redrawn[spec.file]:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        drawn = spec.draw(*spec.args, path.with_name(f".drawing-{path.name}"))  # same suffix: same format
        os.replace(drawn, path)
        cache[spec.file] = key
        write_text(out / CACHE_FILE, json.dumps(cache, indent=1, sort_keys=True))
    return redrawn
