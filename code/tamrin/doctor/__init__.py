"""`build.py doctor`: the preflight checks (checks.py), the timed steps and the time estimate (timing.py), and the
runner below that bounds each check and prints the table."""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from ..errors import TamrinError
from ..profiles import within
from .checks import (FAIL, Check, Facts, can_start, check_access, check_bitsandbytes, check_dataset, check_disk,
                     check_gpu, check_processor, check_python_and_packages, planned_dtype, render)
from .timing import check_estimate, check_steps


# Seconds each check may take (the hub calls inside have their own shorter timeouts); the timed steps are not
# bounded: on a GPU they include the model download.
BUDGET = {"python + packages": 20, "gpu": 20, "bitsandbytes": 30, "hf token + access": 30, "dataset": 40,
          "processor": 60, "disk": 10}


def guarded(name: str, fn: Callable[[], Check], budget: float | None) -> Check:
    """`fn()` within `budget` seconds: its TamrinError is the check's one-line failure, any other exception a one-line
    'unexpected' failure (never a traceback), and running past the budget a failure too."""
    finished, check, error = within(fn, budget)
    if not finished:
        return Check(name, FAIL, f"did not finish within {budget:g} s", "check the network (or the disk) and rerun")
    if isinstance(error, TamrinError):
        cause, _, fix = str(error).partition(": ")
        return Check(name, FAIL, cause, fix)
    if error is not None:
        first = str(error).splitlines()[0] if str(error) else ""
        return Check(name, FAIL, f"unexpected {type(error).__name__}: {first[:200]}",
                     "rerun with -v; report it if it persists")
    return check


def run(cfg, paths, steps: int = 3) -> int:
    """All checks for `cfg`'s profile; exit status 0 only when the run can start."""
    t0 = time.perf_counter()
    facts = Facts(profile=cfg.profile, work_dir=Path(tempfile.mkdtemp(prefix="tamrin-doctor-")))
    print(f"doctor: profile {cfg.profile}, model {cfg.model.id if cfg.model.kind != 'tiny' else 'tiny (offline)'}, "
          f"data {cfg.data.source}", flush=True)
    done: list[Check] = []

    def add(name: str, fn: Callable[[], Check]) -> None:
        done.append(guarded(name, fn, BUDGET.get(name)))
        print(f"  {name}: {done[-1].status}", flush=True)

    local = cfg.model.kind == "tiny" or Path(str(cfg.model.id)).is_dir()
    try:
        add("python + packages", lambda: check_python_and_packages(facts))
        add("gpu", lambda: check_gpu(facts, cfg))
        add("bitsandbytes", lambda: check_bitsandbytes(facts))
        add("hf token + access", lambda: check_access(facts, cfg))
        add("dataset", lambda: check_dataset(facts, cfg))
        add("processor", lambda: check_processor(facts, cfg))
        add("disk", lambda: check_disk(cfg.profile, paths, local, str(cfg.model.id), planned_dtype(cfg, facts.gpu)))
        if steps > 0 and facts.gpu and cfg.profile != "demo":
            print("  timed steps: loading the model (the first time this downloads several GB) …", flush=True)
        add("timed steps", lambda: check_steps(facts, cfg, steps))
        add("estimate of `all`", lambda: check_estimate(facts, cfg, paths))
    finally:
        shutil.rmtree(facts.work_dir, ignore_errors=True)
    ok = can_start(done)
    print(f"\n{render(done)}\n")
    print(f"doctor: {'the run can start' if ok else 'fix the FAIL rows above, then rerun doctor'} "
          f"({time.perf_counter() - t0:.0f} s)")
    return 0 if ok else 1
