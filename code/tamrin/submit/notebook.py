"""The Colab/Kaggle notebook: `notebook.ipynb` beside this file, committed as a notebook (its cells say what it does).
The `notebook` command writes dist/notebook.ipynb, its one cell tagged `parameters` filled from the configuration (as
papermill would), and its HTML export (nbconvert, not executed). Its results cells show the views below: they read
only results/ (through the contract) and figures/ and return plain values — a path, an HTML string — so they work
(and are tested) without IPython; the loss curve is the report's own figure file.
"""
from __future__ import annotations

import base64
import html
import warnings
from pathlib import Path
from typing import Any

from .. import contract
from ..atomic import write_text
from ..errors import TamrinError
from ..provenance import git
from ..runner import StageContext

IPYNB, HTML = "notebook.ipynb", "notebook.html"
TEMPLATE = Path(__file__).with_name("notebook.ipynb")
STUDENT_KEYS = ("first_name_fa", "last_name_fa", "first_name_en", "last_name_en", "student_number")
MODELS = (("base", "base PaliGemma"), ("finetuned", "fine-tuned (QLoRA)"))


def origin_url(root: Path) -> str:
    """The checkout's `origin` remote when a notebook could clone it: https and without credentials."""
    url = (git(root, "remote", "get-url", "origin", timeout=10) or "").strip()
    return url if url.startswith("https://") and "@" not in url else ""


def t4_estimate_md(root: Path, batch_size: int, grad_accum: int, max_minutes: float) -> str:
    """Markdown: the paper run's stages on a T4 with the notebook's settings, from the throughput model
    (extrapolated from the committed H200 measurement; `build.py doctor` measures the real GPU)."""
    from ..config import load_config
    from ..data.subset import planned_counts
    from ..doctor.timing import Workload, estimate_extrapolated, hms, load_reference

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
        return HTMLExporter().from_notebook_node(nb)[0]


def write_notebook(ctx: StageContext) -> tuple[Path, Path]:
    """(Re)write dist/notebook.ipynb and dist/notebook.html, the parameters cell filled from the configuration."""
    import nbformat

    z = ctx.section("zip")
    nb = build_notebook({
        "REPO_URL": z.notebook_repo_url or origin_url(ctx.paths.root), "PROFILE": "paper",
        "BATCH_SIZE": z.notebook_batch_size, "GRAD_ACCUM": z.notebook_grad_accum,
        "MAX_MINUTES": float(z.notebook_max_minutes), "EXTRA_SETS": [],
        "STUDENT": {k: str(getattr(ctx.cfg.student, k, "")) for k in STUDENT_KEYS},
        "T4_ESTIMATE_MD": t4_estimate_md(ctx.paths.root, z.notebook_batch_size, z.notebook_grad_accum,
                                         z.notebook_max_minutes)})
    ipynb, html_file = ctx.paths.dist / IPYNB, ctx.paths.dist / HTML
    write_text(ipynb, nbformat.writes(nb))
    write_text(html_file, export_html(nb))
    return ipynb, html_file


def ensure_notebook(ctx: StageContext) -> None:
    """For the zip: build the notebook when dist/ has none; keep one that is there (it may be a copy the
    student ran and saved with its outputs) and refresh only its HTML export when missing or older."""
    import nbformat

    ipynb, html_file = ctx.paths.dist / IPYNB, ctx.paths.dist / HTML
    if not ipynb.is_file():
        write_notebook(ctx)
        ctx.log.info(f"wrote {ctx.paths.rel(ipynb)} and {ctx.paths.rel(html_file)}")
        return
    try:
        nb = nbformat.read(ipynb, as_version=4)
        nbformat.validate(nb)
    except Exception as e:  # noqa: BLE001 - any parse or schema failure means the same to the user
        raise TamrinError(f"{ctx.paths.rel(ipynb)} is not a valid notebook ({type(e).__name__}); delete it and "
                          "the zip rebuilds it (or run `python build.py notebook`)") from None
    if not html_file.is_file() or html_file.stat().st_mtime < ipynb.stat().st_mtime:
        write_text(html_file, export_html(nb))
        ctx.log.info(f"exported {ctx.paths.rel(ipynb)} → {ctx.paths.rel(html_file)}")


def run(ctx: StageContext) -> None:
    ipynb, html_file = write_notebook(ctx)
    ctx.log.info(f"wrote {ctx.paths.rel(ipynb)} and {ctx.paths.rel(html_file)} (open the .ipynb in Colab or Kaggle)")


# ---------------------------------------------------------------------------------------- the results views

def loss_figure(figures: Path) -> Path:
    """The report's own loss figure (the file the report stage draws), or a clear error before the report ran."""
    from ..report.figures import LOSS_FIGURE

    path = figures / LOSS_FIGURE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the report draws it (run the build cell first)")
    return path


def rouge_rows(results: Path) -> list[dict[str, str]]:
    """One row per evaluated model: n, ROUGE-1/2/L F with their 95% CI, exact match."""
    rows = []
    for key, label in MODELS:
        if (results / "eval" / key / "metrics.json").is_file():
            m = contract.read(results, f"eval/{key}/metrics.json")
            rouge = {k: getattr(m, k) for k in ("rouge1", "rouge2", "rougeL")}
            rows.append({"model": label, "n": str(m.n),
                         **{k: f"{s.f:.3f} [{s.ci_low:.3f}, {s.ci_high:.3f}]" for k, s in rouge.items()},
                         "exact match": f"{m.exact_match:.3f}"})
    return rows


def table_html(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "<p>no metrics in results/eval/ yet</p>"
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r.values()) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img_tag(path: Path) -> str:
    if not path.is_file():
        return "(image missing)"
    mime = "jpeg" if path.suffix.lower() in (".jpg", ".jpeg") else "png"
    return f'<img src="data:image/{mime};base64,{base64.b64encode(path.read_bytes()).decode()}" width="160">'


def samples_html(results: Path) -> str:
    """The report's samples (results/eval/samples.json): image, question, answer, base and fine-tuned answers."""
    head = "<tr><th>#</th><th>image</th><th>question</th><th>answer</th><th>base</th><th>fine-tuned</th></tr>"
    body = "".join(
        f"<tr><td>{n}</td><td>{_img_tag(results / 'data' / s.image)}</td>"
        + "".join(f"<td>{html.escape(v)}</td>" for v in (s.question, s.answer, s.base, s.finetuned)) + "</tr>"
        for n, s in enumerate(contract.read(results, "eval/samples.json").samples, 1))
    return f"<table>{head}{body}</table>"
