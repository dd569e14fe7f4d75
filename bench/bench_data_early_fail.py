"""How soon does the data stage give up on rows it cannot read? (issue 23: a 200,000-row local folder in the_cauldron's
layout with no CLEVR QA pair in it must fail in under 20 s, having read fewer than 1,000 rows.)

    python bench/bench_data_early_fail.py [--rows 200000] [--shards 24] [--out bench/results/data_early_fail.json]

Builds the folder (24 parquet shards like the_cauldron's clevr config, row groups of 100 rows, one small PNG and two
non-CLEVR QA turns per row) in a temporary directory, then times, with the demo profile's other settings:
- in this process, `run_stage("data")` with datasets' parquet reader wrapped to count the rows it read;
- the command a user runs, `python build.py data --set data.source=hub --set data.hub_id=FOLDER …`, in a new
  interpreter (imports included), with its exit status and its one-line error.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "code"), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def build_folder(folder: Path, rows: int, shards: int) -> float:
    from test_data_stage import not_clevr, png, write_cauldron_copy

    t = time.perf_counter()
    image = [png()]
    write_cauldron_copy(folder, rows=[(image, [not_clevr(i), not_clevr(i + 1)]) for i in range(rows)],
                        shards=shards, row_group=100)
    return time.perf_counter() - t


def overrides(folder: Path) -> list[str]:
    return ["data.source=hub", f"data.hub_id={folder}", "data.hub_config=clevr", "data.hub_split=train"]


def in_process(folder: Path, project: Path) -> dict:
    from datasets.packaged_modules.parquet.parquet import Parquet

    from tamrin.config import load_config
    from tamrin.errors import TamrinError
    from tamrin.runner import Paths, run_stage

    read = {"rows": 0}
    real = Parquet._generate_tables

    def counting(self, *args, **kwargs):
        for key, table in real(self, *args, **kwargs):
            read["rows"] += table.num_rows
            yield key, table

    Parquet._generate_tables = counting
    cfg = load_config("demo", overrides=overrides(folder), root=project)
    t = time.perf_counter()
    try:
        run_stage("data", cfg, Paths(project))
        error = None
    except TamrinError as e:
        error = str(e)
    finally:
        Parquet._generate_tables = real
    return {"seconds": round(time.perf_counter() - t, 2), "rows_read_from_parquet": read["rows"], "error": error}


def command(folder: Path, project: Path) -> dict:
    args = [sys.executable, str(project / "build.py"), "data", "--profile", "demo"]
    for o in overrides(folder):
        args += ["--set", o]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "code")}
    t = time.perf_counter()
    done = subprocess.run(args, cwd=project, env=env, capture_output=True, text=True)
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    return {"seconds": round(time.perf_counter() - t, 2), "exit_status": done.returncode,
            "error_lines": len(lines), "error": lines[0] if lines else done.stderr[-500:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--shards", type=int, default=24)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "data_early_fail.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tamrin-early-fail-") as tmp:
        tmp = Path(tmp)
        folder = tmp / "the_cauldron_copy"
        build = build_folder(folder, args.rows, args.shards)
        project = tmp / "project"
        project.mkdir()
        shutil.copytree(ROOT / "configs", project / "configs", ignore=shutil.ignore_patterns("student.toml"))
        shutil.copy(ROOT / "build.py", project / "build.py")
        inside = in_process(folder, project)
        cli = command(folder, project)
        for r in (inside, cli):  # the folder's temporary path is no result
            r["error"] = (r["error"] or "").replace(str(folder), "FOLDER")
    result = {
        "what": "data stage on a local the_cauldron-layout folder whose rows hold no CLEVR QA pair",
        "rows_in_folder": args.rows, "shards": args.shards, "row_group_rows": 100, "qa_pairs_per_row": 2,
        "shuffle_buffer": 1000, "folder_build_seconds": round(build, 1),
        "in_process": inside, "command": cli,
        "acceptance": {"under_20_s": cli["seconds"] < 20 and inside["seconds"] < 20,
                       "fewer_than_1000_rows_read": inside["rows_read_from_parquet"] < 1000},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_1min": os.getloadavg()[0]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
