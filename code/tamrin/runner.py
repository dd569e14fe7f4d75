"""The one stage runner: cache keys, skipping cached stages, atomic outputs, manifests last.

A stage writes into a private staging folder; only when its entry function returns does the runner write
`manifest.json` (the last file) and swap the folder into `results/<stage>/`. A stage killed at any point therefore
leaves either the previous complete result or nothing — never a manifest that claims completion of a partial
output. Long-lived scratch (training checkpoints for resume) goes to `ctx.work_dir`, which survives a kill.
"""
from __future__ import annotations

import fcntl
import hashlib
import importlib
import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from . import ROOT, contract
from .atomic import read_json
from .codehash import changed_files, combine, file_hashes, module_file, stage_sources
from .config import Config, input_files
from .errors import MissingResultError, TamrinError
from .log import log_to_file, stage_logger
from .provenance import code_version, hardware, packages, project_path, redact
from .stages import COMPUTE_STAGES, STAGES, Stage

MANIFEST = contract.MANIFEST


@dataclass
class Paths:
    """Where generated things go; tests point these at a temporary folder. `results_dir` moves results/ (with the
    checkpoints in results/.work) elsewhere, e.g. onto Google Drive so a Colab disconnect loses nothing."""

    root: Path = ROOT
    results_dir: Path | None = None

    def __post_init__(self) -> None:
        self.results = self.results_dir if self.results_dir is not None else self.root / "results"
        self.figures, self.report, self.dist = (self.root / name for name in ("figures", "report", "dist"))

    @classmethod
    def from_env(cls, root: Path = ROOT, results_dir: str | Path | None = None) -> "Paths":
        """`results_dir` (the --results-dir option), else $TAMRIN_RESULTS_DIR, else <root>/results."""
        chosen = results_dir or os.environ.get("TAMRIN_RESULTS_DIR") or None
        return cls(root, Path(chosen).expanduser().resolve() if chosen else None)

    def rel(self, path: Path) -> str:
        """`path` as `results/…` inside the results folder, relative to the root inside it, else as given (messages
        must not carry the absolute path of a results folder moved elsewhere)."""
        if self.results_dir is not None and path.is_relative_to(self.results_dir):
            return str(Path("results") / path.relative_to(self.results_dir))
        return str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)

    def stage_dir(self, name: str) -> Path:
        return self.results / name

    def work_dir(self, name: str) -> Path:
        return self.results / ".work" / name


@dataclass
class StageContext:
    """What a stage's entry function receives."""

    stage: str
    cfg: Config
    out_dir: Path  # write every output here (staging; swapped in atomically on success)
    work_dir: Path  # persistent scratch (checkpoints): survives a kill, keyed by cache key
    inputs: dict[str, Path]  # upstream stage -> its completed results folder
    paths: Paths
    cache_key: str
    log: logging.Logger
    extra: dict[str, Any] = field(default_factory=dict)  # merged into the manifest (e.g. notes)

    @property
    def profile(self) -> str:
        return self.cfg.profile

    def section(self, name: str) -> Any:
        return self.cfg.sections[name]


def read_manifest(paths: Paths, name: str) -> dict | None:
    """The stage's manifest as plain data, or None when it is missing, unreadable or does not fit the contract
    (a result written by another version of Tamrin is not trusted: the stage runs again)."""
    rel = f"{name}/{MANIFEST}"
    try:
        return contract.validate(rel, read_json(paths.results / rel)).model_dump(mode="json")
    except (OSError, json.JSONDecodeError, TamrinError):
        return None


def code_files(stage: Stage, cfg: Config) -> dict[str, str]:
    """Per-file hashes of what the stage runs and reads: the sources its entry module imports, its own results models
    (`contract.<stage>`), and the repository files its config names as inputs (e.g. `memory.measured_from`)."""
    named = [f for section in stage.sections for f in input_files(cfg.sections[section], ROOT)]
    return file_hashes(sorted({*stage_sources(stage.module), module_file(f"tamrin.contract.{stage.name}"), *named}))


def config_of(stage: Stage, cfg: Config) -> dict[str, Any]:
    return {s: cfg.sections[s].model_dump() for s in stage.sections}


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class KeyParts:
    key: str
    config_hash: str
    code_hash: str
    inputs: dict[str, str]
    code_files: dict[str, str]


def cache_key(stage: Stage, cfg: Config, upstream_results: dict[str, str]) -> KeyParts:
    """Hash of the stage's config sections, profile, its code, and the identity of the upstream results it reads."""
    cfg_hash = _digest({"profile": cfg.profile, "config": config_of(stage, cfg)})
    files = code_files(stage, cfg)
    src_hash = combine(files)
    key = _digest({"stage": stage.name, "config": cfg_hash, "code": src_hash, "inputs": upstream_results})
    return KeyParts(key, cfg_hash, src_hash, dict(upstream_results), files)


SHOWN_FILES = 3


@dataclass
class StageState:
    """What `all` would do with one compute stage now."""

    state: str  # "cached" | "kept" (only its code changed) | "stale" | "missing"
    why: str | None  # for stale: the reason; for kept: the changed files
    parts: KeyParts
    manifest: dict | None

    @property
    def key(self) -> str:
        """What downstream stages will read: the recorded result's identity when it stays, else a mark that this
        stage runs first (its new identity is known only once it has: unchanged results keep the old one)."""
        return results_identity(self.manifest) if self.state in ("cached", "kept") else PENDING

    def describe(self) -> str:
        if self.state == "kept":  # the status table's cell: a few of the changed files (the run's log names them all)
            files = self.why.split(", ")
            more = f" and {len(files) - SHOWN_FILES} more" if len(files) > SHOWN_FILES else ""
            return f"code changed (kept): {', '.join(files[:SHOWN_FILES])}{more}"
        return f"stale ({self.why})" if self.state == "stale" else self.state


def judge(stage: Stage, cfg: Config, paths: Paths, upstream: dict[str, str]) -> StageState:
    """cached: the recorded key matches and the files are intact. kept: an expensive stage (hours on a GPU) whose
    code alone changed — same config, same upstream results, outputs intact — while [build] strict is off: its
    results stay and `why` names the changed files (Snakemake's --rerun-triggers without "code"). Else stale (`why`
    says what changed) or missing."""
    parts, manifest = cache_key(stage, cfg, upstream), read_manifest(paths, stage.name)
    folder = paths.stage_dir(stage.name)
    if manifest is None:
        return StageState("missing", "missing", parts, None)
    # files the manifest records that are gone or changed size (e.g. results unpacked from a zip without images)
    gone = [rel for rel, size in manifest["files"].items()
            if not (folder / rel).is_file() or (folder / rel).stat().st_size != size]
    if manifest["cache_key"] == parts.key:
        if not gone:
            return StageState("cached", None, parts, manifest)
        return StageState("stale", f"{len(gone)} output file(s) missing or changed, e.g. {gone[0]}", parts, manifest)
    if stage.expensive and not cfg.build.strict and not gone \
            and (manifest["config_hash"], manifest["inputs"]) == (parts.config_hash, parts.inputs):
        recorded = manifest["code_files"]
        changed = changed_files(recorded, parts.code_files) if recorded else ["(not recorded by this older manifest)"]
        return StageState("kept", ", ".join(changed), parts, manifest)
    why = [w for w, differs in (("config changed", manifest["config_hash"] != parts.config_hash),
                                ("code changed", manifest["code_hash"] != parts.code_hash)) if differs]
    if pending := [d for d, k in parts.inputs.items() if k == PENDING]:
        why.append("upstream runs first: " + ", ".join(pending))
    if moved := [d for d, k in parts.inputs.items() if k != PENDING and manifest["inputs"].get(d) != k]:
        why.append("upstream changed: " + ", ".join(moved))
    return StageState("stale", "; ".join(why) or "key differs", parts, manifest)


def plan(cfg: Config, paths: Paths) -> dict[str, StageState]:
    """Each compute stage's state, upstream first, as `all` would find it: a stage downstream of one that will run
    again counts as stale (it stays only if that run's results come out unchanged); one downstream of a kept result
    reads that result's recorded identity."""
    out: dict[str, StageState] = {}
    for name in COMPUTE_STAGES:
        out[name] = judge(STAGES[name], cfg, paths, {d: out[d].key for d in STAGES[name].deps})
    return out


def load_entry(stage: Stage) -> Callable[[StageContext], None]:
    module, func = stage.entry.split(":")
    return getattr(importlib.import_module(module), func)


@contextmanager
def stage_lock(paths: Paths, name: str):
    """Hold an exclusive lock on a stage: two processes building the same results/ must not interleave.

    A POSIX record lock (`lockf`), not `flock`: a forked child — a DataLoader worker — does not inherit it, so the
    lock ends with the process that took it. With `flock` the workers of a killed run share the lock's open file
    and keep it until they notice their parent is gone, and the resumed run is refused in the meantime (the GPU
    kill-and-resume run of the paper profile hit exactly this)."""
    lock_dir = paths.results / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{name}.lock", "a+") as f:
        try:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise TamrinError(f"stage '{name}' is being built by another Tamrin process (pid {holder}) in "
                              f"{paths.rel(paths.results)}; wait for it to finish, or use another checkout") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Outcome:
    status: str  # "cached" | "kept" | "ran"


PENDING = "(runs first)"
LOG = "log.txt"


def results_identity(manifest: dict) -> str:
    """What a downstream stage records of this result: `results_id`, which changes only when the files the stage
    wrote change (a manifest from before it existed: the cache key). Upstream code that changed without changing its
    output therefore leaves downstream results — the fine-tuned model above all — as they are."""
    return manifest.get("results_id") or manifest["cache_key"]


def results_digest(folder: Path) -> str:
    """Digest of every file a stage wrote but its log (timings) and manifest: what downstream stages read."""
    hashes = {}
    for f in sorted(folder.rglob("*")):
        rel = f.relative_to(folder).as_posix()
        if f.is_file() and rel not in (MANIFEST, LOG):
            with open(f, "rb") as fh:
                hashes[rel] = hashlib.file_digest(fh, "sha256").hexdigest()
    return combine(hashes)


def upstream_results(stage: Stage, paths: Paths, required: bool = True) -> dict[str, str]:
    """The identities of the stage's completed upstream results (`results_identity`); a missing one is a clear
    error when `required`, else an empty string."""
    keys = {}
    for dep in (d for d in stage.deps if STAGES[d].cached):
        m = read_manifest(paths, dep)
        if m is None and required:
            raise MissingResultError(f"missing {paths.rel(paths.stage_dir(dep) / MANIFEST)}: "
                                     f"run `python build.py {dep}` first (or `python build.py all`)")
        keys[dep] = results_identity(m) if m else ""
    return keys


def stage_context(name: str, cfg: Config, paths: Paths, out_dir: Path | None = None, key: str = "") -> StageContext:
    """What a stage's entry function receives: a compute stage writes to `out_dir` (its staging folder) and keeps
    checkpoints in its key's persistent work folder; a product stage (report, zip, notebook; no key) writes straight
    to its own folder."""
    work = paths.work_dir(name) / key[:16]
    if key:
        work.mkdir(parents=True, exist_ok=True)
    return StageContext(stage=name, cfg=cfg, out_dir=out_dir or paths.root / name, work_dir=work,
                        inputs={d: paths.stage_dir(d) for d in (STAGES[name].deps if name in STAGES else ())},
                        paths=paths, cache_key=key, log=stage_logger(name))


def run_stage(name: str, cfg: Config, paths: Paths, *, force: bool = False) -> Outcome:
    """Run one compute stage unless its recorded result stays (cached or kept). Upstream results must be current.

    A non-main process of a distributed launch (torchrun's RANK > 0: multi-GPU fine-tuning) runs the stage's code
    beside the main process, so collective training works, but in a private scratch folder: it never takes the lock,
    writes a manifest or replaces results — the main process (rank 0) does that."""
    rank = int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0
    if rank == 0:
        with stage_lock(paths, name):
            return _run_locked(STAGES[name], cfg, paths, force)
    # rank 0 may still be writing an upstream result; the stage's own rendezvous (finetune) waits for it
    state = judge(STAGES[name], cfg, paths, upstream_results(STAGES[name], paths, required=False))
    if not force and state.state in ("cached", "kept"):
        return Outcome(state.state)
    logging.getLogger("tamrin").setLevel(logging.WARNING)  # rank 0 reports progress; the others only problems
    with tempfile.TemporaryDirectory(prefix=f"tamrin-{name}-rank{rank}-", ignore_cleanup_errors=True) as scratch:
        load_entry(STAGES[name])(stage_context(name, cfg, paths, Path(scratch), state.parts.key))
    return Outcome("ran")


def _run_locked(stage: Stage, cfg: Config, paths: Paths, force: bool) -> Outcome:
    name, log = stage.name, stage_logger(stage.name)
    state = judge(stage, cfg, paths, upstream_results(stage, paths))
    parts, previous = state.parts, state.manifest
    if not force and state.state == "cached":
        log.info(f"cached: {name} (key {parts.key[:4]}…, {previous['seconds']:.0f} s saved)")
        return Outcome("cached")
    if not force and state.state == "kept":
        log.info(f"kept: {name} — only its code changed ({state.why}); its results stay. To rerun it: "
                 f"python build.py {name} --force {name} (or set build.strict = true)")
        return Outcome("kept")
    if previous is not None and not force:
        log.info(f"re-running {name}: {state.why}")
    staging_root, trash_root = paths.results / ".staging", paths.results / ".trash"
    for d in [*staging_root.glob(f"{name}-*"), *trash_root.glob(f"{name}-*")]:  # left by a killed earlier run
        shutil.rmtree(d, ignore_errors=True)
    staging = staging_root / f"{name}-{os.getpid()}"
    staging.mkdir(parents=True)
    ctx = stage_context(name, cfg, paths, staging, parts.key)
    started, t0 = _now(), time.perf_counter()
    log.info(f"running: {name} (profile {cfg.profile}, key {parts.key[:4]}…)")
    try:
        with log_to_file(name, staging / LOG):
            load_entry(stage)(ctx)
        seconds = time.perf_counter() - t0
        final = paths.stage_dir(name)
        digest = results_digest(staging)
        unchanged = previous is not None and final.is_dir() and results_digest(final) == digest
        manifest = {
            "stage": name, "profile": cfg.profile, "cache_key": parts.key,
            "config": config_of(stage, cfg), "inputs": parts.inputs,
            "config_hash": parts.config_hash, "code_hash": parts.code_hash, "code_files": parts.code_files,
            "code_version": code_version(), "started": started, "finished": _now(),
            "seconds": round(seconds, 2), "hardware": hardware(), "packages": packages(),
            "sources": [s if s.startswith("--set ") else project_path(s, paths.root) for s in cfg.sources],
            "summary": ctx.extra, "results_id": results_identity(previous) if unchanged else digest,
            "files": {str(f.relative_to(staging)): f.stat().st_size for f in sorted(staging.rglob("*")) if f.is_file()},
        }
        # The manifest is written last (validated against the contract, redacted), then the folder is swapped in
        # (the previous result moved to the trash first: a rename cannot replace a non-empty folder).
        contract.write(staging, f"{name}/{MANIFEST}", json.loads(redact(json.dumps(manifest, default=str))))
        trash = trash_root / f"{name}-{os.getpid()}-{time.time_ns()}"
        if final.exists():
            trash_root.mkdir(parents=True, exist_ok=True)
            os.replace(final, trash)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, final)
        shutil.rmtree(trash, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # the previous complete result stays untouched
        raise
    log.info(f"done: {name} in {seconds:.1f} s")
    shutil.rmtree(ctx.work_dir, ignore_errors=True)  # the key's scratch is not needed once its result is complete
    return Outcome("ran")
