"""Python, the installed packages against pyproject's bounds (torch ≥ 2.6 among them), bitsandbytes' kernels."""
from __future__ import annotations

import platform
import re
from importlib import metadata
from pathlib import Path

from .result import FAIL, OK, WARN, Check, Facts

ROOT = Path(__file__).resolve().parents[3]


def _project() -> dict | None:
    """pyproject.toml's [project] table (the checkout's), or None for an installed package without it."""
    path = ROOT / "pyproject.toml"
    if not path.is_file():
        return None
    import tomllib

    return tomllib.loads(path.read_text(encoding="utf-8"))["project"]


def requirements() -> list[str]:
    """The `dependencies` of pyproject.toml (the checkout's; the installed package's metadata otherwise)."""
    project = _project()
    if project is not None:
        return project["dependencies"]
    return [r for r in (metadata.requires("tamrin") or []) if "extra ==" not in r]


def python_requirement() -> str:
    """pyproject.toml's `requires-python` (what the pinned set needs), e.g. ">=3.11"."""
    project = _project()
    if project is not None:
        return project["requires-python"]
    return metadata.metadata("tamrin").get("Requires-Python", "")


def check_python_and_packages(facts: Facts) -> Check:
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    python, needed = platform.python_version(), python_requirement()
    if needed and not SpecifierSet(needed).contains(python, prereleases=True):
        return Check("python + packages", FAIL, f"Python {python}",
                     f"Tamrin needs Python {needed} (what its pinned packages need): use a newer Python")
    bad, versions = [], {}
    for line in requirements():
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            have = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            bad.append(f"{req.name} missing")
            continue
        versions[req.name] = have
        if not req.specifier.contains(re.sub(r"\+.*$", "", have), prereleases=True):
            bad.append(f"{req.name} {have} (needs {req.specifier})")
    shown = ", ".join(f"{n} {versions[n]}" for n in ("torch", "transformers", "peft", "bitsandbytes", "datasets")
                      if n in versions)
    if bad:
        return Check("python + packages", FAIL, "; ".join(bad),
                     "run `bash scripts/install.sh` (or pip install -e . -c constraints/tested.txt); torch must be "
                     "≥ 2.6 with the build for your CUDA")
    return Check("python + packages", OK, f"Python {python}; {shown}")


def check_bitsandbytes(facts: Facts) -> Check:
    """NF4 quantize + 4-bit matmul on the device the run uses (vlm/model.nf4_supported: tried, not guessed)."""
    import torch

    from ..vlm.model import nf4_supported

    try:
        import bitsandbytes
        version = bitsandbytes.__version__
    except Exception as e:  # noqa: BLE001 - a broken build raises anything at import
        return Check("bitsandbytes", FAIL, f"import failed ({type(e).__name__})",
                     "pip install bitsandbytes -c constraints/tested.txt")
    if facts.profile == "demo":
        ok = nf4_supported(torch.device("cpu"))
        return Check("bitsandbytes", OK if ok else WARN, f"{version}: NF4 on CPU {'works' if ok else 'unavailable'}",
                     "" if ok else "the demo falls back to unquantized weights (model.quantization = auto)")
    if not facts.gpu:
        return Check("bitsandbytes", FAIL, f"{version}: its CUDA kernels cannot load without a CUDA GPU",
                     "run on a GPU machine (Colab/Kaggle: a T4 runtime)")
    if nf4_supported(torch.device("cuda", 0)):
        return Check("bitsandbytes", OK, f"{version}: NF4 quantize + 4-bit matmul ran on the GPU")
    return Check("bitsandbytes", FAIL, f"{version}: the CUDA build did not run an NF4 matmul",
                 "reinstall bitsandbytes for this CUDA (pip install --force-reinstall bitsandbytes)")
