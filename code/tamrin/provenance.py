"""Provenance for manifests (code version, hardware by model name only, package versions, paths as the project sees
them), and what must never leave the machine: Hugging Face tokens, the absolute paths of the project and of the home
directory, the user and host names. `redact` is the one redaction step of every printed message and written log,
error file and manifest; `scan` is the one scanner the zip runs over every file it will hold.

Tokens are `hf_` and random letters and digits (34 today, fewer before): the pattern takes any length from 8 but needs
a lower-case letter and an upper-case letter or a digit, so identifiers such as `hf_token` are not taken for one; the
exact values of HF_TOKEN / HUGGING_FACE_HUB_TOKEN and of the stored login token match whatever they look like. User
and host names match as whole words, and only when they can identify someone: a generic account (`root` on Colab,
Kaggle and CI, `runner`, `jovyan`, …) or a name under 3 characters would match ordinary words of the code.
"""
from __future__ import annotations

import getpass
import os
import platform
import re
import socket
import subprocess
import sys
from contextlib import suppress
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from . import ROOT
from .codehash import PACKAGE_DIR, hash_files

PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets", "huggingface-hub",
            "rouge-score", "numpy", "scipy", "sympy", "torchdiffeq", "matplotlib", "jinja2", "typst", "pillow",
            "pydantic", "tamrin")
HF_TOKEN_PATTERN = re.compile(r"\bhf_(?=[A-Za-z0-9]*[a-z])(?=[A-Za-z0-9]*[A-Z0-9])[A-Za-z0-9]{8,}\b")
TOKEN_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
MIN_SECRET_LEN = 8  # shorter environment values would match by accident (and are no real token)
GENERIC_NAMES = frozenset({"root", "user", "users", "admin", "ubuntu", "debian", "runner", "jovyan", "colab",
                           "kaggle", "localhost", "vm", "docker", "nobody", "ec2-user", "codespace", "vscode"})
REDACTED = {"token": "hf_***", "home": "~", "project": "<project>", "user": "<user>", "host": "<host>"}


def stored_token() -> str | None:
    """The token `hf auth login` stored (huggingface_hub's own lookup, which reads HF_TOKEN first)."""
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # noqa: BLE001 - no huggingface_hub, no token file: nothing to hide
        return None


@dataclass(frozen=True)
class Identity:
    """The strings that identify this machine, its user and their credentials."""

    project: str = ""  # absolute path of the project root
    home: str = ""
    user: str = ""
    host: str = ""
    tokens: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def current(cls, project: Path | str = "") -> "Identity":
        tokens = [os.environ.get(v, "").strip() for v in TOKEN_VARS] + [(stored_token() or "").strip()]
        try:
            user = getpass.getuser()
        except Exception:  # noqa: BLE001 - no user name in this environment
            user = ""
        return cls(project=str(Path(project).resolve()) if project else "", home=str(Path.home()),
                   user=user, host=socket.gethostname(),
                   tokens=tuple(dict.fromkeys(t for t in tokens if len(t) >= MIN_SECRET_LEN)))

    def names(self) -> list[tuple[str, str]]:
        """(kind, name) of each user or host name worth hiding, longest first: a host named after its user
        (user-laptop) is replaced whole before the user name inside it."""
        out = []
        for kind, name in (("user", self.user), ("host", self.host), ("host", self.host.split(".")[0])):
            if len(name) >= 3 and name.lower() not in GENERIC_NAMES and name not in {n for _, n in out}:
                out.append((kind, name))
        return sorted(out, key=lambda kn: -len(kn[1]))

    def paths(self) -> dict[str, str]:
        """kind → an absolute path worth hiding, longest first (the project usually lies inside the home)."""
        found = {k: p.rstrip("/") for k, p in (("project", self.project), ("home", self.home)) if len(p) > 1}
        return dict(sorted(found.items(), key=lambda kv: -len(kv[1])))


def identity() -> Identity:
    """This machine's identity, recomputed when the environment that defines it changes (a token set after start-up
    is still hidden)."""
    env = tuple(os.environ.get(v, "") for v in (*TOKEN_VARS, "HOME", "USER", "LOGNAME", "HF_HOME", "HF_TOKEN_PATH"))
    return _identity(env + (socket.gethostname(),))


@lru_cache(maxsize=1)
def _identity(environment: tuple[str, ...]) -> Identity:
    return Identity.current(ROOT)


def _private(ident: Identity) -> list[tuple[str, str, re.Pattern]]:
    """(kind, what it is, pattern) of every private string, in the order `redact` replaces them. A path matches as a
    whole path component run: /home/al in /home/al/x, not in /home/alice."""
    return ([("token", "the value of the Hugging Face token", re.compile(re.escape(t))) for t in ident.tokens]
            + [("token", "a Hugging Face token", HF_TOKEN_PATTERN)]
            + [(k, f"the absolute path of the {'project' if k == 'project' else 'home directory'}",
                re.compile(re.escape(p) + r"(?![A-Za-z0-9_.-])")) for k, p in ident.paths().items()]
            + [(k, f"the {k} name", re.compile(rf"\b{re.escape(n)}\b")) for k, n in ident.names()])


def redact(text: str, ident: Identity | None = None) -> str:
    """`text` with every token, identifying path and name (of this machine by default) replaced by a placeholder."""
    for kind, _, pattern in _private(ident or identity()):
        text = pattern.sub(REDACTED[kind], text)
    return text


def find(text: str, ident: Identity) -> list[tuple[int, str]]:
    """(line number, what) for every private thing in `text`; `what` names the kind, never the secret."""
    private = _private(ident)
    return [(lineno, what) for lineno, line in enumerate(text.splitlines(), 1)
            for _, what, pattern in private if pattern.search(line)]


def scan(texts: list[tuple[str, str]]) -> list[str]:
    """'name:line: what' for every private thing of this machine in the (name, text) pairs."""
    ident = identity()
    return [f"{name}:{lineno}: {what}" for name, text in texts for lineno, what in find(text, ident)]


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


def git(root: Path, *args: str, timeout: float = 20) -> str | None:
    """The output of `git -C root <args>`, or None when git is missing or fails."""
    try:
        res = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout if res.returncode == 0 else None


def code_version() -> str:
    """The git commit (with -dirty when the tree has changes), else a hash of the package sources."""
    if commit := (git(ROOT, "rev-parse", "HEAD", timeout=5) or "").strip():
        dirty = (git(ROOT, "status", "--porcelain", "--untracked-files=no", timeout=5) or "").strip()
        return commit + ("-dirty" if dirty else "")
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
        with suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out
