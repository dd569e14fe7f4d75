"""Which files go into the submission zip, and under which names.

Pure choices over a folder tree: the reproducible code (from `git ls-files` when the root is a git
checkout, else a walk that skips the usual junk), the JSON/JSONL results, the figures, the report PDF and
the notebook. Never: checkpoints, model weights (except the LoRA adapter when asked), caches, `.git`,
virtual environments, `__pycache__`, `.env`, `configs/student.toml`.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# Top-level code folders and files a grader needs to re-run the work.
CODE_DIRS = ("code", "templates", "configs", "scripts", "bench")
CODE_FILES = ("build.py", "README.md", "pyproject.toml", "Makefile", "requirements.txt", "LICENSE")

# Never packed, wherever they are.
JUNK_DIRS = {".git", ".hg", ".svn", ".venv", "venv", "__pycache__", ".pytest_cache", ".mypy_cache",
             ".ruff_cache", ".ipynb_checkpoints", "node_modules", ".cache", ".tamrin-work", "wandb"}
JUNK_SUFFIXES = {".pyc", ".pyo", ".swp", ".tmp"}
JUNK_NAMES = {".env", ".DS_Store", "Thumbs.db", ".netrc"}
WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".onnx", ".h5", ".msgpack"}
PRIVATE = {"configs/student.toml"}  # the student's own details; the example file is packed instead

RESULT_SUFFIXES = {".json", ".jsonl"}
ADAPTER = "finetune/adapter"  # relative to results/
DATASET_IMAGES = "data/images"  # relative to results/: images of the dataset, never packed
NOTEBOOK_FILES = ("notebook.ipynb", "notebook.html")  # in dist/, packed at the zip's top level
REPORT_PDF = "report.pdf"  # packed at the zip's top level
SUPPLEMENT_PDF = "supplement.pdf"  # beside it: the checks and reproducibility material that support the answers
PDFS = (REPORT_PDF, SUPPLEMENT_PDF)  # both in report/


@dataclass(frozen=True)
class Entry:
    src: Path  # the file on disk
    arc: str  # its name inside the zip (POSIX)


def _is_junk_part(name: str) -> bool:
    """A junk folder's name, trainer checkpoint folders included (checkpoint, checkpoints, checkpoint-120, …)."""
    return name in JUNK_DIRS or name.endswith(".egg-info") or name in ("checkpoint", "checkpoints") \
        or name.startswith(("checkpoint-", "checkpoint_"))


def _is_junk_dir(name: str, path: Path) -> bool:
    return _is_junk_part(name) or (path / "pyvenv.cfg").exists()  # a venv under any name


def is_excluded(rel: str, *, allow_weights: bool = False) -> bool:
    """True for a root-relative POSIX path that must never be packed."""
    p = PurePosixPath(rel)
    if rel in PRIVATE or p.name in JUNK_NAMES or p.name.startswith(".env") or p.suffix in JUNK_SUFFIXES:
        return True
    if any(_is_junk_part(part) for part in p.parts[:-1]):
        return True
    return p.suffix in WEIGHT_SUFFIXES and not allow_weights


def walk(folder: Path) -> list[Path]:
    """Regular files under `folder` (symlinks skipped), pruning junk folders, sorted."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not _is_junk_dir(d, here / d) and not (here / d).is_symlink())
        out += [here / f for f in filenames if (here / f).is_file() and not (here / f).is_symlink()]
    return sorted(out)


def git_files(root: Path) -> list[str] | None:
    """Tracked plus untracked-but-not-ignored files when `root` is the top of a git checkout, else None."""
    try:
        top = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=20)
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root.resolve():
            return None
        res = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return sorted({f for f in res.stdout.split("\0") if f}) if res.returncode == 0 else None


def _is_code(rel: str) -> bool:
    p = PurePosixPath(rel)
    return rel in CODE_FILES or (len(p.parts) > 1 and p.parts[0] in CODE_DIRS)


def code_entries(root: Path) -> list[Entry]:
    """The code needed to reproduce the work, at its repository-relative path."""
    listed = git_files(root)
    if listed is None:
        listed = [f.relative_to(root).as_posix() for f in walk(root)
                  if f.relative_to(root).parts[0] in CODE_DIRS or f.relative_to(root).as_posix() in CODE_FILES]
    out = []
    for rel in listed:
        src = root / rel
        if (_is_code(rel) and not is_excluded(rel) and src.is_file() and not src.is_symlink()
                and not _inside_venv(root, rel)):
            out.append(Entry(src, rel))
    return out


def _inside_venv(root: Path, rel: str) -> bool:
    """A file below a folder holding pyvenv.cfg (a virtual environment git was not told to ignore)."""
    parents = PurePosixPath(rel).parents
    return any((root / d / "pyvenv.cfg").exists() for d in parents if str(d) != ".")


def result_entries(results: Path, include_adapter: bool) -> list[Entry]:
    """results/**/*.json(l) (metrics, predictions, loss, memory, flow, stats, manifests, samples),
    not the dataset images, scratch (.work/.staging/.trash) or checkpoints; the adapter only when asked."""
    if not results.is_dir():
        return []
    out = []
    for f in walk(results):
        rel = f.relative_to(results).as_posix()
        if rel.startswith(".") or rel.startswith(DATASET_IMAGES + "/"):
            continue
        in_adapter = rel.startswith(ADAPTER + "/")
        if in_adapter and not include_adapter:
            continue
        if is_excluded(rel, allow_weights=in_adapter):
            continue
        if in_adapter or f.suffix in RESULT_SUFFIXES:
            out.append(Entry(f, f"results/{rel}"))
    return out


def figure_entries(figures: Path) -> list[Entry]:
    if not figures.is_dir():
        return []
    return [Entry(f, f"figures/{f.relative_to(figures).as_posix()}") for f in walk(figures)
            if not f.name.startswith(".") and not is_excluded(f.relative_to(figures).as_posix())]


def plan(root: Path, results: Path, figures: Path, report_dir: Path, dist: Path,
         include_adapter: bool) -> list[Entry]:
    """Every file of the zip: report.pdf, supplement.pdf and the notebook at the top, then code, results, figures."""
    top = [Entry(report_dir / name, name) for name in PDFS]
    top += [Entry(dist / n, n) for n in NOTEBOOK_FILES if (dist / n).is_file()]
    unique: dict[str, Entry] = {}
    for e in top + code_entries(root) + result_entries(results, include_adapter) + figure_entries(figures):
        unique.setdefault(e.arc, e)
    return list(unique.values())
