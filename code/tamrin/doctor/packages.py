"""Python, the installed packages against pyproject's bounds (torch ≥ 2.6 among them), bitsandbytes' kernels."""
from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

from .result import FAIL, OK, WARN, Check, Facts

ROOT = Path(__file__).resolve().parents[3]


def requirements() -> list[str]:
    """The `dependencies` of pyproject.toml (the checkout's; the installed package's metadata otherwise)."""
    path = ROOT / "pyproject.toml"
    if path.is_file():
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib
        return tomllib.loads(path.read_text(encoding="utf-8"))["project"]["dependencies"]
    return [r for r in (metadata.requires("tamrin") or []) if "extra ==" not in r]


def check_python_and_packages(facts: Facts) -> Check:
    from packaging.requirements import Requirement

    if sys.version_info < (3, 10):
        return Check("python + packages", FAIL, f"Python {sys.version.split()[0]}", "Tamrin needs Python ≥ 3.10")
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
    return Check("python + packages", OK, f"Python {sys.version.split()[0]}; {shown}")


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
