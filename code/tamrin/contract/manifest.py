"""results/<stage>/manifest.json: what ran a stage, with which config, code and inputs (written last)."""
from __future__ import annotations

from typing import Any, Optional

from pydantic import Field

from . import Profile, Strict


class Hardware(Strict):
    """What ran a stage, by model name only (no host name, no user, no paths)."""

    cpu: str
    gpu: Optional[str] = None
    gpu_mem: Optional[str] = None
    python: str
    os: str


class Manifest(Strict):
    stage: str
    profile: Profile
    cache_key: str
    config: dict[str, dict[str, Any]]  # the config sections the stage read, {section: {key: value}}
    inputs: dict[str, str]  # upstream stage -> the identity of the result read (runner.results_identity)
    config_hash: str
    code_hash: str
    code_files: dict[str, str] = Field(default_factory=dict)  # each source and input file -> its hash (to name changes)
    code_version: str  # git commit (+ "-dirty") or a source hash
    started: str
    finished: str
    seconds: float
    hardware: Hardware
    packages: dict[str, str]
    sources: list[str]  # config layers, relative to the project root ("configs/demo.toml", "--set a.b")
    summary: dict[str, Any] = Field(default_factory=dict)  # a few headline numbers of the stage
    results_id: str = ""  # changes only when the stage's files (but its log) change; "" in older manifests
    files: dict[str, int]  # every file of the stage folder -> its size in bytes
