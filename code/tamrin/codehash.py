"""The sources a stage runs, derived from the import graph of its entry module (no hand-kept list).

Every `import tamrin.…`, `from tamrin… import …` and relative import, at module level or inside a function, is
followed through the AST within `code/tamrin`; a module brings the `__init__.py` of each package above it (importing
runs them) and the data files beside it that its source names in a string literal (e.g. `paligemma_3b_config.json`).
Lazy imports count: a stage's key changes when any code it *may* run changes, never less. A source file is hashed by
its syntax tree without docstrings (`ast.dump`), so comments, docstrings and formatting never enter a key; the
modules that only turn failures into messages (`MESSAGE_MODULES`) are hashed with their strings blanked too. (A new
Python may dump trees differently and so change every key; the runner's policy for expensive stages keeps those.)
"""
from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

from . import ROOT

PACKAGE = "tamrin"
PACKAGE_DIR = ROOT / "code" / PACKAGE
# Modules (relative to the package) whose every string is message text: their wording never enters a key.
MESSAGE_MODULES = ("errors.py",)


def module_file(name: str) -> Path | None:
    """The source file of module `tamrin.a.b` (a module or a package's __init__), or None outside the package."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    return next((f for f in (base.with_suffix(".py"), base / "__init__.py") if f.is_file()), None)


def _module_name(path: Path) -> str:
    if not path.is_relative_to(PACKAGE_DIR.parent):  # an entry module outside the package (a test's stand-in)
        return path.stem
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """Absolute names a `from X import a, b` may load: X itself, and X.a / X.b where those are modules."""
    parts = module.split(".")
    base = parts[: len(parts) - node.level + is_package] if node.level else []  # `from .` in a package: itself
    target = ".".join(base + ([node.module] if node.module else []))
    return [target] + [f"{target}.{alias.name}" for alias in node.names]


@lru_cache(maxsize=None)
def _parsed(path: Path, mtime_ns: int, size: int) -> tuple[tuple[str, ...], frozenset[str], str]:
    """One parse of a source file (per version of it): (names it imports, its short string literals, the hash of
    its normalised syntax tree)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    name, is_package = _module_name(path), path.name == "__init__.py"
    names: list[str] = []
    literals: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names += _resolve_from(name, is_package, node)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) < 200:
            literals.add(node.value)
    for node in ast.walk(tree):  # drop the docstring of the module and of every class and function
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body \
                and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant) \
                and isinstance(node.body[0].value.value, str):
            node.body = node.body[1:] or [ast.Pass()]
    if path.is_relative_to(PACKAGE_DIR) and path.relative_to(PACKAGE_DIR).as_posix() in MESSAGE_MODULES:
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                node.value = ""
    return tuple(names), frozenset(literals), hashlib.sha256(ast.dump(tree).encode()).hexdigest()[:16]


def _parse(path: Path) -> tuple[tuple[str, ...], frozenset[str], str]:
    st = path.stat()
    return _parsed(path, st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=None)
def _direct(path: Path) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    """(modules imported by `path`, data files beside it that it names)."""
    names, literals, _ = _parse(path)
    files = (module_file(prefix) for n in names for prefix in _prefixes(n))  # importing a.b.c runs a/__init__ too
    modules = [f for f in files if f is not None and f != path]
    data = [f for f in sorted(path.parent.iterdir()) if f.is_file() and f.suffix not in (".py", ".pyc")
            and f.name in literals]
    return tuple(dict.fromkeys(modules)), tuple(data)


def _prefixes(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def stage_sources(entry_module: str) -> list[Path]:
    """Every file of `code/tamrin` the entry module may run or read, sorted."""
    start = module_file(entry_module)
    if start is None:  # outside the package (e.g. a test's stand-in stage): its own file and what it imports
        import importlib.util

        spec = importlib.util.find_spec(entry_module)
        if spec is None or not spec.origin:
            raise ValueError(f"cannot find the source of module {entry_module}")
        start = Path(spec.origin)
    seen: set[Path] = set()
    data: set[Path] = set()
    todo = [start, *[module_file(p) for p in _prefixes(entry_module)[:-1]]]
    while todo:
        path = todo.pop()
        if path is not None and path not in seen:
            seen.add(path)
            modules, named = _direct(path)
            data.update(named)
            todo += modules
    return sorted(seen | data)


def normalised_hash(path: Path) -> str:
    """A short hash of what of a file can change a result: a Python file's syntax tree without docstrings (and
    without strings in a message module); any other file's bytes."""
    if path.suffix == ".py":
        return _parse(path)[2]
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def file_hashes(files: list[Path]) -> dict[str, str]:
    """Each file (by its path relative to the repository) -> the short hash of its normalised content, sorted."""
    return {(f.relative_to(ROOT).as_posix() if f.is_relative_to(ROOT) else f.name): normalised_hash(f)
            for f in sorted(files)}


def combine(hashes: dict[str, str]) -> str:
    """One hash over per-file hashes (their paths included)."""
    return hashlib.sha256("".join(f"{k}\0{v}\0" for k, v in sorted(hashes.items())).encode()).hexdigest()


def hash_files(files: list[Path]) -> str:
    """sha256 over the files' paths (relative to the repository) and normalised contents."""
    return combine(file_hashes(files))


def changed_files(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Files added, removed or changed between two `file_hashes` results."""
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
