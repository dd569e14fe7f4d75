"""Provenance for manifests: code version, hardware, package versions, secret redaction."""
from __future__ import annotations

import hashlib
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from . import ROOT

PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets", "rouge-score",
            "numpy", "scipy", "sympy", "torchdiffeq", "matplotlib", "jinja2", "typst", "pillow", "tamrin")

_TOKEN_RE = re.compile(r"hf_[A-Za-z0-9]{16,}")


def redact(text: str) -> str:
    """Hide Hugging Face tokens (hf_…) and the value of HF_TOKEN / HUGGING_FACE_HUB_TOKEN."""
    text = _TOKEN_RE.sub("hf_***", text)
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        value = os.environ.get(var, "")
        if len(value) >= 8:
            text = text.replace(value, "***")
    return text


def hash_paths(paths: list[Path]) -> str:
    """sha256 over the .py/.toml/.json/.j2 sources under `paths` (name and bytes), order-independent."""
    h = hashlib.sha256()
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += [f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts
                      and f.suffix in (".py", ".toml", ".json", ".j2", ".typ")]
        elif p.is_file():
            files.append(p)
    for f in sorted(files):
        h.update(str(f.relative_to(ROOT) if f.is_relative_to(ROOT) else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def code_version() -> str:
    """The git commit (with -dirty when the tree has changes), else a hash of the package sources."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=5).stdout.strip()
        if commit:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "src-" + hash_paths([ROOT / "code" / "tamrin"])[:16]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict:
    """CPU, and the GPU when torch is already loaded and sees one (never imports torch itself)."""
    info = {"cpu": f"{_cpu_name()} ({os.cpu_count()} cores)", "gpu": None, "gpu_mem": None,
            "python": sys.version.split()[0], "platform": platform.platform()}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        n = torch.cuda.device_count()
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = f"{n}× {props.name}" if n > 1 else props.name
        info["gpu_mem"] = f"{props.total_memory / 2**30:.1f} GiB"
    return info


def packages() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
