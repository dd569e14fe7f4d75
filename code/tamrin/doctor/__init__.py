"""`build.py doctor`: runs the checks in order, each within a time budget and without a traceback, and prints the
table."""
from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from ..errors import TamrinError
from .checks import FAIL, Check, Facts, can_start, render

# Seconds each check may take (the hub calls inside have their own shorter timeouts); the timed steps are not
# bounded: on a GPU they include the model download.
BUDGET = {"python + packages": 20, "gpu": 20, "bitsandbytes": 30, "hf token + access": 30, "dataset": 40,
          "processor": 60, "disk": 10}


def guarded(name: str, fn: Callable[[], Check], budget: float | None) -> Check:
    """`fn()` in a worker thread: its TamrinError is the check's one-line failure, any other exception a one-line
    'unexpected' failure, and running past `budget` seconds a failure too (the thread is left to die with the
    process)."""
    box: dict[str, Check] = {}

    def work() -> None:
        try:
            box["check"] = fn()
        except TamrinError as e:
            cause, _, fix = str(e).partition(": ")
            box["check"] = Check(name, FAIL, cause, fix)
        except Exception as e:  # noqa: BLE001 - one line, never a traceback
            first = str(e).splitlines()[0] if str(e) else ""
            box["check"] = Check(name, FAIL, f"unexpected {type(e).__name__}: {first[:200]}",
                                 "rerun with -v; report it if it persists")

    worker = threading.Thread(target=work, name=f"doctor-{name}", daemon=True)
    worker.start()
    worker.join(budget)
    return box.get("check") or Check(name, FAIL, f"did not finish within {budget:g} s",
                                     "check the network (or the disk) and rerun")


def run(cfg, paths, steps: int = 3) -> int:
    """All checks for `cfg`'s profile; exit status 0 only when the run can start."""
    from . import checks as c
    from .timing import check_estimate, check_steps

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
        add("python + packages", lambda: c.check_python_and_packages(facts))
        add("gpu", lambda: c.check_gpu(facts, cfg))
        add("bitsandbytes", lambda: c.check_bitsandbytes(facts))
        add("hf token + access", lambda: c.check_access(facts, cfg))
        add("dataset", lambda: c.check_dataset(facts, cfg))
        add("processor", lambda: c.check_processor(facts, cfg))
        add("disk", lambda: c.check_disk(cfg.profile, paths, local, str(cfg.model.id), c.planned_dtype(cfg, facts.gpu)))
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
