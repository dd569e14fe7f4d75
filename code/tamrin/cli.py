"""`python build.py <command>`: argument parsing and the order stages run in."""
from __future__ import annotations

import argparse
import shutil
import sys
import traceback
from pathlib import Path

from . import ROOT
from .atomic import write_text
from .config import Config, load_config
from .errors import TamrinError
from .log import setup_console, stage_logger
from .provenance import redact
from .runner import Paths, load_entry, plan, read_manifest, run_stage, stage_context, upstream_results
from .stages import COMPUTE_STAGES, STAGES, ancestors

COMMANDS = {
    "all": "run every stage in order (cached ones are skipped), then the report and the zip",
    "report-only": "render the report and pack the zip from cached results; never trains",
    **{name: stage.help for name, stage in STAGES.items()},
    "notebook": "write the Colab/Kaggle notebook → dist/notebook.ipynb (+ .html)",
    "status": "show each stage: cached / stale (why) / missing, with profile, duration, hardware",
    "doctor": "preflight: packages, GPU, token and access, dataset, processor, disk, timed steps and a time estimate",
    "clean": "delete generated results/, figures/, report/ and dist/",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python build.py",
        description="Tamrin — a reproducible answer to homework 4 of Deep Generative Models (University of Tehran).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {c:<12} {h}" for c, h in COMMANDS.items()),
    )
    p.add_argument("command", choices=list(COMMANDS), metavar="command", help="one of the commands below")
    p.add_argument("--profile", default="auto", choices=("auto", "paper", "demo"),
                   help="paper = PaliGemma-3B on CUDA; demo = offline tiny model on CPU; auto = pick and say why")
    p.add_argument("--config", type=Path, default=None, help="an extra TOML file layered over the profile's config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value (repeatable), e.g. --set train.lr=1e-4")
    p.add_argument("--force", action="append", default=[], metavar="STAGE", choices=list(COMPUTE_STAGES),
                   help="re-run STAGE even when its cached result matches (repeatable)")
    p.add_argument("--allow-demo", action="store_true",
                   help="let `zip` pack results of the demo profile (they are not PaliGemma results)")
    p.add_argument("--results-dir", type=Path, default=None, metavar="DIR",
                   help="keep results/ (checkpoints included) in DIR instead of ./results, e.g. on Google Drive "
                        "(default: $TAMRIN_RESULTS_DIR, else ./results)")
    p.add_argument("--steps", type=int, default=3, metavar="N",
                   help="doctor: timed training steps on the real model (0 skips them; default 3)")
    p.add_argument("-v", "--verbose", action="store_true", help="more log detail")
    return p


def choose_profile(requested: str, command: str, paths: Paths) -> str:
    """Compute commands resolve `auto` by hardware and hub access; the others follow the cached results."""
    computes = command in COMPUTE_STAGES or command in ("all", "doctor")
    if requested == "auto" and not computes:
        manifests = (read_manifest(paths, n) for n in COMPUTE_STAGES)
        if cached := next((m["profile"] for m in manifests if m), None):
            return cached
    from .profiles import resolve_profile

    profile, reason = resolve_profile(requested, light=not computes)
    if requested == "auto":
        stage_logger("tamrin").info(f"profile: {profile} ({reason})")
    return profile


def warn_later_refusals(cfg: Config, allow_demo: bool) -> None:
    """Before long work starts, say what the zip step at the end will refuse."""
    log = stage_logger("zip")
    if cfg.profile == "demo" and not allow_demo:
        log.info("note: demo profile — the zip will be skipped at the end (its numbers are not PaliGemma "
                 "results); pass --allow-demo to pack it anyway")
    elif missing := cfg.student.missing_for_zip(cfg.zip.pattern_keys()):
        log.warning(f"the zip will refuse at the end: set {', '.join(missing)} in configs/student.toml "
                    f"(copy configs/student.example.toml)")


def run_product(name: str, cfg: Config, paths: Paths, **extra) -> None:
    upstream_results(STAGES[name], paths)  # a missing upstream result is one clear line
    ctx = stage_context(name, cfg, paths)
    ctx.extra.update(extra)
    load_entry(STAGES[name])(ctx)


def cmd_status(cfg: Config, paths: Paths) -> None:
    rows = [("stage", "state", "profile", "seconds", "finished", "hardware")]
    for name, st in plan(cfg, paths).items():
        m, hw = st.manifest, (st.manifest or {}).get("hardware") or {}
        rows.append((name, st.describe(), "-", "-", "-", "-") if m is None else
                    (name, st.describe(), m["profile"], f"{m['seconds']:.1f}", m["finished"][:19],
                     hw.get("gpu") or hw.get("cpu", "?")[:40]))
    rows.append(("report", "built" if (paths.report / "report.pdf").exists() else "missing", "-", "-", "-", "-"))
    zips = sorted(paths.dist.glob("*.zip"))
    rows.append(("zip", f"built ({zips[-1].name})" if zips else "missing", "-", "-", "-", "-"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    print(f"config profile: {cfg.profile}")
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


def dispatch(args: argparse.Namespace, paths: Paths) -> int:
    cmd = args.command
    if cmd == "clean":
        for d in (paths.results, paths.figures, paths.report, paths.dist):
            if d.exists():
                shutil.rmtree(d)
                print(f"removed {paths.rel(d)}")
        return 0
    cfg = load_config(choose_profile(args.profile, cmd, paths), args.config, args.overrides, root=paths.root)
    if cmd == "status":
        cmd_status(cfg, paths)
    elif cmd == "doctor":
        from .doctor import run as run_doctor

        return run_doctor(cfg, paths, steps=args.steps)
    elif cmd == "notebook":
        from .submit import write_notebook

        write_notebook(stage_context("notebook", cfg, paths))
    else:  # a compute stage (after its upstream stages), report, zip, all, report-only
        if cmd == "all":
            warn_later_refusals(cfg, args.allow_demo)
        for name in COMPUTE_STAGES if cmd == "all" else [*ancestors(cmd), cmd] if cmd in COMPUTE_STAGES else []:
            run_stage(name, cfg, paths, force=name in args.force)
        if cmd in ("report", "all", "report-only"):
            run_product("report", cfg, paths)
        if cmd in ("zip", "all", "report-only"):  # all and report-only skip a demo run's zip with a notice
            run_product("zip", cfg, paths, allow_demo=args.allow_demo, skip_demo=cmd != "zip")
    return 0


def main(argv: list[str] | None = None, paths: Paths | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_console(args.verbose)
    paths = paths or Paths.from_env(ROOT, args.results_dir)
    try:
        return dispatch(args, paths)
    except TamrinError as e:
        print(redact(f"error: {e}"), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted: completed stages are kept; the interrupted one will run again next time",
              file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug: one line on screen, the traceback in a file
        trace = paths.results / "last-error.txt"
        write_text(trace, redact(traceback.format_exc()))
        print(redact(f"error: unexpected {type(e).__name__}: {e} (full traceback in {paths.rel(trace)})"),
              file=sys.stderr)
        return 1
