"""`notebook` command: dist/notebook.ipynb (Colab/Kaggle) and its HTML export (nbconvert, not executed).

The notebook is committed as a notebook, `notebook.ipynb` beside this file: it installs Tamrin (clone or upload;
the tested library versions, the platform's CUDA torch kept), keeps results on Google Drive (Colab) or in
/kaggle/working (Kaggle) so a disconnect loses nothing, logs in to the hub with the token from the platform's
secrets (never printed), runs `build.py doctor` and then `build.py all` sized for a 16 GB T4, shows the report's
loss figure, the ROUGE table and the 10 samples, and downloads the zip. Building it only fills its one cell
tagged `parameters` (as papermill would) from the configuration.
"""
from __future__ import annotations

import subprocess
import warnings
from pathlib import Path
from typing import Any

from ..atomic import write_text
from ..errors import TamrinError
from ..runner import StageContext
IPYNB, HTML = "notebook.ipynb", "notebook.html"
TEMPLATE = Path(__file__).with_name("notebook.ipynb")
STUDENT_KEYS = ("first_name_fa", "last_name_fa", "first_name_en", "last_name_en", "student_number")


def origin_url(root: Path) -> str:
    """The checkout's `origin` remote when a notebook could clone it: https and without credentials."""
    try:
        res = subprocess.run(["git", "-C", str(root), "remote", "get-url", "origin"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    url = res.stdout.strip() if res.returncode == 0 else ""
    return url if url.startswith("https://") and "@" not in url else ""


def t4_estimate_md(root: Path, batch_size: int, grad_accum: int, max_minutes: float) -> str:
    """Markdown: the paper run's stages on a T4 with the notebook's settings, from the throughput model
    (extrapolated from the committed H200 measurement; `build.py doctor` measures the real GPU)."""
    from ..config import load_config
    from ..data.subset import planned_counts
    from ..throughput import Workload, estimate_extrapolated, hms, load_reference

    reference = root / "bench" / "results" / "nvidia-h200.json"
    if not reference.is_file():
        return "_(this copy has no committed GPU measurement: the doctor cell measures your GPU)_"
    cfg = load_config("paper", root=root)
    n_train, n_test = planned_counts(cfg.data)
    t = cfg.train
    w = Workload(n_train, n_test, batch_size, grad_accum, t.epochs, t.max_steps, 1, max_minutes)
    e = estimate_extrapolated(w, load_reference(reference), "Tesla T4")
    lines = ["| stage | on a T4 |", "|---|---|",
             f"| fine-tuning ({n_train:,} questions, {w.total_steps} steps of {batch_size} × {grad_accum}) | "
             f"{hms(e.seconds['finetune'])} |",
             f"| evaluation (base + fine-tuned on {n_test} test questions) | {hms(e.seconds['eval'])} |",
             "| data, memory, report | minutes (network-bound streaming; not modelled) |",
             "| flow matching (CPU) | `doctor` measures it on this machine |",
             "", f"Basis: {e.basis}."] + [f"Note: {n}." for n in e.notes]
    return "\n".join(lines)


def parameters(ctx: StageContext) -> dict[str, object]:
    """The values of the notebook's parameters cell, from the configuration."""
    z = ctx.section("zip")
    return {"REPO_URL": z.notebook_repo_url or origin_url(ctx.paths.root), "PROFILE": "paper",
            "BATCH_SIZE": z.notebook_batch_size, "GRAD_ACCUM": z.notebook_grad_accum,
            "MAX_MINUTES": float(z.notebook_max_minutes), "EXTRA_SETS": [],
            "STUDENT": {k: str(getattr(ctx.cfg.student, k, "")) for k in STUDENT_KEYS},
            "T4_ESTIMATE_MD": t4_estimate_md(ctx.paths.root, z.notebook_batch_size, z.notebook_grad_accum,
                                             z.notebook_max_minutes)}


def build_notebook(values: dict[str, object]) -> Any:
    """The committed notebook with its parameters cell set to `values` (each a Python literal), validated."""
    import nbformat

    nb = nbformat.read(TEMPLATE, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    unknown = set(values) - {line.split(" =")[0] for line in cell.source.splitlines() if " = " in line}
    if unknown:
        raise ValueError(f"the notebook's parameters cell has no {', '.join(sorted(unknown))}")
    head = cell.source.splitlines()[0]
    cell.source = "\n".join([head, *(f"{name} = {value!r}" for name, value in values.items())]) + "\n"
    nbformat.validate(nb)
    return nb


def export_html(nb) -> str:
    """The notebook as a standalone HTML page, without executing it."""
    from nbconvert import HTMLExporter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nbconvert's optional-lexer and deprecation chatter
        body, _ = HTMLExporter().from_notebook_node(nb)
    return body


def write_notebook(ctx: StageContext) -> tuple[Path, Path]:
    """(Re)write dist/notebook.ipynb and dist/notebook.html from the configuration."""
    import nbformat

    nb = build_notebook(parameters(ctx))
    ipynb, html = ctx.paths.dist / IPYNB, ctx.paths.dist / HTML
    write_text(ipynb, nbformat.writes(nb))
    write_text(html, export_html(nb))
    return ipynb, html


def ensure_notebook(ctx: StageContext) -> None:
    """For the zip: build the notebook when dist/ has none; keep one that is there (it may be a copy the
    student ran and saved with its outputs) and refresh only its HTML export when missing or older."""
    import nbformat

    ipynb, html = ctx.paths.dist / IPYNB, ctx.paths.dist / HTML
    if not ipynb.is_file():
        write_notebook(ctx)
        ctx.log.info(f"wrote {ctx.paths.rel(ipynb)} and {ctx.paths.rel(html)}")
        return
    try:
        nb = nbformat.read(ipynb, as_version=4)
        nbformat.validate(nb)
    except Exception as e:  # noqa: BLE001 - any parse or schema failure means the same to the user
        raise TamrinError(f"{ctx.paths.rel(ipynb)} is not a valid notebook ({type(e).__name__}); delete it and "
                          "the zip rebuilds it (or run `python build.py notebook`)") from None
    if not html.is_file() or html.stat().st_mtime < ipynb.stat().st_mtime:
        write_text(html, export_html(nb))
        ctx.log.info(f"exported {ctx.paths.rel(ipynb)} → {ctx.paths.rel(html)}")


def run(ctx: StageContext) -> None:
    ipynb, html = write_notebook(ctx)
    ctx.log.info(f"wrote {ctx.paths.rel(ipynb)} and {ctx.paths.rel(html)} (open the .ipynb in Colab or Kaggle)")
