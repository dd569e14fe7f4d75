"""What must never leave the machine, and the one place that recognises it: Hugging Face tokens, the absolute
paths of the project and of the home directory, the user name and the host name.

`redact` is the single redaction step every printed message and written log, error file and manifest goes
through; `scan` is the single scanner the zip runs over every file it will hold (it refuses, naming file and
line). Both use the same `Identity` of this machine and the same token pattern.

Tokens: Hugging Face user access tokens are `hf_` followed by random letters and digits (34 today; older ones
were shorter). The pattern takes any length from 8 on but requires a lower-case letter and an upper-case letter or
a digit, so identifiers such as `hf_token` or `hf_hub_download` in the code are not mistaken for one; the exact values of
HF_TOKEN / HUGGING_FACE_HUB_TOKEN and of the token `hf auth login` stored are matched whatever they look like.
User and host names are matched as whole words, and only when they can identify someone: a generic account
(`root` on Colab, Kaggle and CI, `runner`, `jovyan`, …) or a name shorter than 3 characters would match ordinary
words of the code and identifies no one.
"""
from __future__ import annotations

import getpass
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

HF_TOKEN_PATTERN = re.compile(r"\bhf_(?=[A-Za-z0-9]*[a-z])(?=[A-Za-z0-9]*[A-Z0-9])[A-Za-z0-9]{8,}\b")
TOKEN_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
MIN_SECRET_LEN = 8  # shorter environment values would match by accident (and are no real token)
GENERIC_NAMES = frozenset({"root", "user", "users", "admin", "ubuntu", "debian", "runner", "jovyan", "colab",
                           "kaggle", "localhost", "vm", "docker", "nobody", "ec2-user", "codespace", "vscode"})
REDACTED = {"token": "hf_***", "home": "~", "project": "<project>", "user": "<user>", "host": "<host>"}


def _stored_token() -> str | None:
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
        tokens = [os.environ.get(v, "").strip() for v in TOKEN_VARS] + [(_stored_token() or "").strip()]
        try:
            user = getpass.getuser()
        except Exception:  # noqa: BLE001 - no user name in this environment
            user = ""
        return cls(project=str(Path(project).resolve()) if project else "", home=str(Path.home()),
                   user=user, host=socket.gethostname(),
                   tokens=tuple(dict.fromkeys(t for t in tokens if len(t) >= MIN_SECRET_LEN)))

    def names(self) -> list[tuple[str, str]]:
        """(kind, name) of each user or host name worth hiding (see the module docstring), longest first: a host
        named after its user (user-laptop) is replaced whole before the user name inside it."""
        out = []
        for kind, name in (("user", self.user), ("host", self.host), ("host", self.host.split(".")[0])):
            if len(name) >= 3 and name.lower() not in GENERIC_NAMES and name not in {n for _, n in out}:
                out.append((kind, name))
        return sorted(out, key=lambda kn: -len(kn[1]))

    def paths(self) -> dict[str, str]:
        """kind → an absolute path worth hiding, longest first (the project usually lies inside the home)."""
        found = {k: p.rstrip("/") for k, p in (("project", self.project), ("home", self.home)) if len(p) > 1}
        return dict(sorted(found.items(), key=lambda kv: -len(kv[1])))


def _path_pattern(path: str) -> re.Pattern:
    """`path` as a whole path component run: /home/al matches in /home/al/x but not in /home/alice."""
    return re.compile(re.escape(path) + r"(?![A-Za-z0-9_.-])")


def redact(text: str, identity: Identity) -> str:
    """`text` with every token, identifying path and name replaced by a placeholder (REDACTED)."""
    for token in identity.tokens:
        text = text.replace(token, REDACTED["token"])
    text = HF_TOKEN_PATTERN.sub(REDACTED["token"], text)
    for kind, path in identity.paths().items():
        text = _path_pattern(path).sub(REDACTED[kind], text)
    for kind, name in identity.names():
        text = re.sub(rf"\b{re.escape(name)}\b", REDACTED[kind], text)
    return text


def find(text: str, identity: Identity) -> list[tuple[int, str]]:
    """(line number, what) for every private thing in `text`; `what` names the kind, never the secret."""
    hits = []
    checks: list[tuple[str, re.Pattern]] = [("a Hugging Face token", HF_TOKEN_PATTERN)]
    checks += [("the value of the Hugging Face token", re.compile(re.escape(t))) for t in identity.tokens]
    checks += [(f"the absolute path of the {'project' if k == 'project' else 'home directory'}", _path_pattern(p))
               for k, p in identity.paths().items()]
    checks += [(f"the {'user' if k == 'user' else 'host'} name", re.compile(rf"\b{re.escape(n)}\b"))
               for k, n in identity.names()]
    for lineno, line in enumerate(text.splitlines(), 1):
        for what, pattern in checks:
            if pattern.search(line):
                hits.append((lineno, what))
    return hits


def scan(texts: list[tuple[str, str]], identity: Identity) -> list[str]:
    """'name:line: what' for every private thing in the (name, text) pairs."""
    return [f"{name}:{lineno}: {what}" for name, text in texts for lineno, what in find(text, identity)]
