"""Provenance for manifests: code version, hardware (by model name only), package versions, and paths as the
project sees them. Nothing here records a host name, a user name or an absolute path."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from . import ROOT
from .codehash import PACKAGE_DIR, hash_files
from .contract.secrets import Identity, redact as _redact

PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets", "huggingface-hub",
            "rouge-score", "numpy", "scipy", "sympy", "torchdiffeq", "matplotlib", "jinja2", "typst", "pillow",
            "pydantic", "tamrin")

_IDENTITY: dict[tuple, Identity] = {}


def identity() -> Identity:
    """This machine's identity (tokens, home, project path, user, host); recomputed when the environment that
    defines it changes (a token set after start-up is still hidden)."""
    import socket

    from .contract.secrets import TOKEN_VARS

    key = tuple(os.environ.get(v, "") for v in (*TOKEN_VARS, "HOME", "USER", "LOGNAME", "HF_HOME", "HF_TOKEN_PATH"))
    key += (socket.gethostname(),)
    if key not in _IDENTITY:
        _IDENTITY.clear()
        _IDENTITY[key] = Identity.current(ROOT)
    return _IDENTITY[key]


def redact(text: str) -> str:
    """The one redaction step of every message, log line, error file and manifest (see contract.secrets)."""
    return _redact(text, identity())


def project_path(path: str | Path, root: Path = ROOT) -> str:
    """`path` relative to the project root, or `<outside>/name` for a path outside it (never absolute)."""
    p = Path(path)
    try:
        resolved = p.resolve()
    except OSError:
        resolved = p
    if resolved.is_relative_to(Path(root).resolve()):
        return resolved.relative_to(Path(root).resolve()).as_posix()
    if not p.is_absolute() and ".." not in p.parts:
        return p.as_posix()
    return f"<outside>/{p.name}"


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
    sources = [f for f in PACKAGE_DIR.rglob("*") if f.is_file() and "__pycache__" not in f.parts
               and f.suffix in (".py", ".json")]
    return "src-" + hash_files(sources)[:16]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict:
    """CPU and GPU model names (the GPU when torch is already loaded and sees one; never imports torch), the Python
    version and the OS name — no host name, kernel build or path."""
    info = {"cpu": f"{_cpu_name()} ({os.cpu_count()} cores)", "gpu": None, "gpu_mem": None,
            "python": sys.version.split()[0], "os": platform.system()}
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
