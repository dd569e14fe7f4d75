"""Secret scan of every file that goes into the zip: Hugging Face tokens and the value of HF_TOKEN."""
from __future__ import annotations

import os
import re
from pathlib import Path

# A Hugging Face access token: "hf_" and (today) 34 letters/digits; 30+ leaves room for older formats.
HF_TOKEN_RE = re.compile(rb"hf_[A-Za-z0-9]{30,}")
TOKEN_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
MIN_SECRET_LEN = 8  # shorter env values would match by accident (and are no real token)


def env_secrets() -> list[bytes]:
    """Values of the token variables that are set (long enough to be a real secret)."""
    vals = [os.environ.get(v, "").strip() for v in TOKEN_VARS]
    return [v.encode() for v in vals if len(v) >= MIN_SECRET_LEN]


def find_secret(data: bytes, secrets: list[bytes]) -> str | None:
    """What kind of secret `data` holds (never the secret itself), or None."""
    if HF_TOKEN_RE.search(data):
        return "a Hugging Face token (hf_…)"
    if any(s in data for s in secrets):
        return "the value of the HF_TOKEN environment variable"
    return None


def scan(files: list[tuple[Path, str]]) -> list[tuple[str, str]]:
    """(name in zip, what was found) for every file holding a secret."""
    secrets = env_secrets()
    hits = []
    for src, arc in files:
        what = find_secret(src.read_bytes(), secrets)
        if what:
            hits.append((arc, what))
    return hits
