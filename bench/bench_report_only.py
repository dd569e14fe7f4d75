"""Cold `report-only` on the results fixture: the current tree against a base commit, alternated in one run
(each side with its own code and its own fixture, since the results contract may differ between them).

    python bench/bench_report_only.py [--base 8f64287] [--rounds 5] [--out bench/results/report_only.json]

Each round builds, for each side, a fresh project (the fixture results, the committed configs, no figures/ and no
Jinja cache: cold) and runs `python build.py report-only --profile demo` in a new interpreter, timing the whole
command. The two sides alternate, so machine load hits both alike; the result file holds every time, the medians
and their ratio. An absolute target (issue 15: ≤ 3 s on 2 idle cores) needs a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "results"


def checkout(commit: str, dest: Path) -> None:
    """The files of `commit` (code, templates, build.py, configs) under dest, without touching the worktree."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "code", "templates", "build.py", "configs",
                           "tests/fixtures/results"],
                          check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")


def copy_tree(dest: Path) -> None:
    for name in ("code", "templates", "configs", "tests/fixtures/results"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copyfile(ROOT / "build.py", dest / "build.py")


def cold_run(source: Path, work: Path) -> float:
    """Seconds of one cold `report-only` of the project whose code is in `source`."""
    project = work / "project"
    shutil.rmtree(project, ignore_errors=True)
    shutil.copytree(source, project)
    shutil.copytree(source / "tests" / "fixtures" / "results", project / "results")  # each side's own fixture
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "build.py", "report-only", "--profile", "demo"], cwd=project,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"report-only failed in {source.name}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="8f64287", help="commit to compare against (default: before issue 17)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "report_only.json")
    ap.add_argument("--bytecode", action="store_true",
                    help="compile each side's modules to bytecode first, as scripts/install.sh does (an installed "
                         "checkout); default: none, as in a fresh clone's first run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base, head = tmp / "base", tmp / "head"
        checkout(args.base, base)
        copy_tree(head)
        if args.bytecode:
            for src in (base, head):
                subprocess.run([sys.executable, "-m", "compileall", "-q", str(src / "code"), str(src / "build.py")],
                               check=True)
        times: dict[str, list[float]] = {"base": [], "head": []}
        for r in range(args.rounds):
            for name, src in (("base", base), ("head", head)) if r % 2 == 0 else (("head", head), ("base", base)):
                times[name].append(round(cold_run(src, tmp / name), 3))
            print(f"round {r + 1}: base {times['base'][-1]:.2f} s, head {times['head'][-1]:.2f} s", flush=True)
    head_rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
    result = {"what": "cold report-only on tests/fixtures/results (fresh project, no figures, no Jinja cache)",
              "bytecode": "precompiled (installed checkout)" if args.bytecode else "none (a fresh clone's first run)",
              "load_average_after": [round(x, 2) for x in os.getloadavg()],
              "base": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.base], capture_output=True, text=True).stdout.strip() or args.base, "head": head_rev, "rounds": args.rounds, "seconds": times,
              "median": {k: statistics.median(v) for k, v in times.items()},
              "ratio_head_over_base": round(statistics.median(times["head"]) / statistics.median(times["base"]), 3)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result["median"]), "ratio", result["ratio_head_over_base"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
