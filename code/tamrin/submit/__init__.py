"""The submission. `zip` stage: pack the report PDFs, the code (from `git ls-files` in a git checkout, else a walk that
skips the usual junk), the JSON/JSONL results, the figures and the notebook into dist/<name>.zip — never checkpoints,
weights (but the LoRA adapter when asked), caches, `.git`, virtual environments, `.env` or `configs/student.toml`. It
refuses (one line, exit 2) missing student details, results of the offline demo profile (unless --allow-demo; under
`all` and `report-only` a demo run skips the zip with a notice, so the offline pipeline still succeeds), a file holding
a token, an absolute path of the project or the home, the user or host name (provenance.scan), and a zip over
zip.max_mb. The zip is written to a temporary file and validated (CRCs, exactly the planned files, PDFs with pages)
before it replaces the old one.

The Colab/Kaggle notebook: `notebook.ipynb` beside this file, committed as a notebook (its cells say what it does).
The `notebook` command writes dist/notebook.ipynb, its one cell tagged `parameters` filled from the configuration (as
papermill would), and its HTML export (nbconvert, not executed). Its results cells show the views at the end: they read
only results/ (through the contract) and figures/ and return plain values — a path, an HTML string — so they work
(and are tested) without IPython; the loss curve is the report's own figure file.
"""
from __future__ import annotations

import base64
import html
import io
import os
import re
import shutil
import warnings
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .. import contract
from ..atomic import replacing, write_text
from ..errors import TamrinError
from ..provenance import git, scan
from ..runner import MANIFEST, Paths, StageContext
from ..stages import COMPUTE_STAGES

_UNSAFE = re.compile(r"[^\w.\-]+")  # \w keeps letters of any script, digits and "_"

# Top-level code folders and files a grader needs to re-run the work.
CODE_DIRS = ("code", "templates", "configs", "scripts", "bench")
CODE_FILES = ("build.py", "README.md", "pyproject.toml", "Makefile", "requirements.txt", "LICENSE")

# Never packed, wherever they are.
JUNK_DIRS = {".git", ".hg", ".svn", ".venv", "venv", "__pycache__", ".pytest_cache", ".mypy_cache",
             ".ruff_cache", ".ipynb_checkpoints", "node_modules", ".cache", ".tamrin-work", "wandb"}
JUNK_SUFFIXES = {".pyc", ".pyo", ".swp", ".tmp"}
JUNK_NAMES = {".env", ".DS_Store", "Thumbs.db", ".netrc"}
WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".onnx", ".h5", ".msgpack"}
PRIVATE = {"configs/student.toml"}  # the student's own details; the example file is packed instead

RESULT_SUFFIXES = {".json", ".jsonl"}
ADAPTER = "finetune/adapter"  # relative to results/
DATASET_IMAGES = "data/images"  # relative to results/: images of the dataset, never packed
NOTEBOOK_FILES = ("notebook.ipynb", "notebook.html")  # in dist/, packed at the zip's top level
# In report/, packed at the zip's top level: the report, and the checks and reproducibility material beside it.
PDFS = ("report.pdf", "supplement.pdf")


@dataclass(frozen=True)
class Entry:
    src: Path  # the file on disk
    arc: str  # its name inside the zip (POSIX)


def _is_junk_dir(path: Path) -> bool:
    """A junk folder, trainer checkpoint folders (checkpoint, checkpoints, checkpoint-120, …) and a venv under any
    name included."""
    name = path.name
    return name in JUNK_DIRS or name.endswith(".egg-info") or name in ("checkpoint", "checkpoints") \
        or name.startswith(("checkpoint-", "checkpoint_")) or (path / "pyvenv.cfg").exists()


def is_excluded(rel: str, *, allow_weights: bool = False) -> bool:
    """True for a file (its root-relative POSIX path; `walk` found it, so no junk folder holds it) never packed."""
    p = PurePosixPath(rel)
    if rel in PRIVATE or p.name in JUNK_NAMES or p.name.startswith(".env") or p.suffix in JUNK_SUFFIXES:
        return True
    return p.suffix in WEIGHT_SUFFIXES and not allow_weights


def walk(folder: Path) -> list[Path]:
    """Regular files under `folder` (symlinks skipped), pruning junk folders, sorted."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not _is_junk_dir(here / d) and not (here / d).is_symlink())
        out += [here / f for f in filenames if (here / f).is_file() and not (here / f).is_symlink()]
    return sorted(out)


def git_files(root: Path) -> set[str] | None:
    """Tracked plus untracked-but-not-ignored files when `root` is the top of a git checkout, else None."""
    top = git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top.strip()).resolve() != root.resolve():
        return None
    listed = git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard", timeout=60)
    return None if listed is None else {f for f in listed.split("\0") if f}


def code_entries(root: Path) -> list[Entry]:
    """The code needed to reproduce the work, at its repository-relative path; in a git checkout, only what git
    tracks or would add (a file it ignores stays out)."""
    found = [f for d in CODE_DIRS if not (root / d).is_symlink() for f in walk(root / d)]
    found += [root / n for n in CODE_FILES if (root / n).is_file() and not (root / n).is_symlink()]
    listed = git_files(root)
    rels = sorted(f.relative_to(root).as_posix() for f in found)
    return [Entry(root / rel, rel) for rel in rels if not is_excluded(rel) and (listed is None or rel in listed)]


def result_entries(results: Path, include_adapter: bool) -> list[Entry]:
    """results/**/*.json(l) (metrics, predictions, loss, memory, flow, stats, manifests, samples),
    not the dataset images, scratch (.work/.staging/.trash) or checkpoints; the adapter only when asked."""
    out = []
    for f in walk(results):
        rel = f.relative_to(results).as_posix()
        in_adapter = rel.startswith(ADAPTER + "/")
        if rel.startswith((".", DATASET_IMAGES + "/")) or (in_adapter and not include_adapter) \
                or is_excluded(rel, allow_weights=in_adapter):
            continue
        if in_adapter or f.suffix in RESULT_SUFFIXES:
            out.append(Entry(f, f"results/{rel}"))
    return out


def figure_entries(figures: Path) -> list[Entry]:
    return [Entry(f, f"figures/{f.relative_to(figures).as_posix()}") for f in walk(figures)
            if not f.name.startswith(".") and not is_excluded(f.relative_to(figures).as_posix())]


def zip_entries(paths: Paths, include_adapter: bool) -> list[Entry]:
    """Every file of the zip: report.pdf, supplement.pdf and the notebook at the top, then code, results, figures."""
    top = [Entry(paths.report / name, name) for name in PDFS]
    top += [Entry(paths.dist / n, n) for n in NOTEBOOK_FILES if (paths.dist / n).is_file()]
    return (top + code_entries(paths.root) + result_entries(paths.results, include_adapter)
            + figure_entries(paths.figures))


def zip_name(pattern: str, student: object) -> str:
    """`pattern` filled from the student's fields; spaces and path characters become `_`; ends in .zip."""
    values = {k: str(v).strip() for k, v in vars(student).items()}
    name = _UNSAFE.sub("_", pattern.format(**values)).strip("._")
    return name if name.lower().endswith(".zip") else name + ".zip"


def readable_text(path: Path) -> str:
    """The text of a file as a reader of the zip would see it, for the privacy scan: the text and metadata of a PDF
    (its streams are compressed, so the raw bytes hide their words), UTF-8 text, else the bytes as Latin-1 (a token
    inside a binary file is still found)."""
    data = Path(path).read_bytes()
    if data[:5] == b"%PDF-":
        from pypdf import PdfReader
        from pypdf.errors import PyPdfError

        try:
            reader = PdfReader(str(path))
            meta = " ".join(str(v) for v in (reader.metadata or {}).values())
            words = "\n".join(page.extract_text() or "" for page in reader.pages)
        except (PyPdfError, ValueError, KeyError):  # a damaged PDF: its raw bytes are all there is to read
            meta = words = ""
        return meta + "\n" + words + "\n" + data.decode("latin-1")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def human(n: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def largest(items: list[zipfile.ZipInfo], k: int = 8) -> list[str]:
    """The k largest files and top-level folders by packed size, for a "too large" message."""
    folders: dict[str, int] = defaultdict(int)
    for it in items:
        parts = PurePosixPath(it.filename).parts
        if len(parts) > 1:
            folders["/".join(parts[:min(2, len(parts) - 1)]) + "/"] += it.compress_size
    rows = [(it.compress_size, it.filename) for it in items] + [(n, f) for f, n in folders.items()]
    return [f"{arc} ({human(n)})" for n, arc in sorted(rows, reverse=True)[:k]]


def _write(entries: list[Entry], dest: Path) -> list[zipfile.ZipInfo]:
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for e in entries:
            info = zipfile.ZipInfo.from_file(e.src, e.arc)
            info.compress_type = zipfile.ZIP_DEFLATED
            # Readable by everyone once unpacked (atomic writes leave 0600 files); scripts stay executable.
            info.external_attr = (0o100000 | (0o755 if os.access(e.src, os.X_OK) else 0o644)) << 16
            with open(e.src, "rb") as src, zf.open(info, "w") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        return zf.infolist()


def validate(path: Path, expected: list[str], pdf_names: tuple[str, ...]) -> None:
    """The zip opens, every member's CRC checks, it holds exactly `expected`, and its PDFs have pages."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise TamrinError(f"the written zip is corrupt (member {bad} fails its CRC check); "
                                  "check the disk and run the zip again")
            if sorted(zf.namelist()) != sorted(expected):
                raise TamrinError("the written zip does not hold the planned files; run the zip again")
            pdfs = {name: zf.read(name) for name in pdf_names}
    except zipfile.BadZipFile as e:
        raise TamrinError(f"the written zip does not open ({e}); check the disk and run the zip again") from None
    for name, pdf in pdfs.items():
        try:
            pages = len(PdfReader(io.BytesIO(pdf)).pages)
        except (PdfReadError, ValueError, OSError) as e:
            raise TamrinError(f"{name} inside the zip is not a valid PDF ({e}); "
                              "rebuild it with `python build.py report`") from None
        if pages < 1:
            raise TamrinError(f"{name} inside the zip has no pages; rebuild it with `python build.py report`")


def write_zip(entries: list[Entry], dest: Path, max_mb: float) -> list[zipfile.ZipInfo]:
    """Write `entries` to a temporary file beside `dest`; only a zip that fits the size limit and passes validation
    replaces `dest`."""
    for stale in dest.parent.glob(f".{dest.name}.*.tmp"):  # left by a zip run that was killed mid-write
        stale.unlink(missing_ok=True)
    with replacing(dest) as tmp:
        items = _write(entries, tmp)
        size = tmp.stat().st_size
        if size > max_mb * 10**6:  # zip.max_mb counts MB of 10^6 bytes
            raise TamrinError(f"the zip would be {human(size)}, over zip.max_mb = {max_mb:g} MB; largest items: "
                              f"{', '.join(largest(items))} — drop them or raise the limit (--set zip.max_mb=…)")
        validate(tmp, [e.arc for e in entries], PDFS)
    return items


def summary(items: list[zipfile.ZipInfo]) -> list[str]:
    """Manifest lines: one per top-level file or folder (files, unpacked size, packed size), then totals."""
    groups: dict[str, list[zipfile.ZipInfo]] = defaultdict(list)
    for it in items:
        parts = PurePosixPath(it.filename).parts
        groups[parts[0] + "/" if len(parts) > 1 else parts[0]].append(it)
    width = max(len(g) for g in groups)
    lines = []
    for g, its in sorted(groups.items(), key=lambda kv: (kv[0].endswith("/"), kv[0])):
        n = f"{len(its)} file{'s' if len(its) != 1 else ''}"
        lines.append(f"  {g:<{width}}  {n:>10}  {human(sum(i.file_size for i in its)):>9}  "
                     f"(packed {human(sum(i.compress_size for i in its))})")
    total, packed = sum(i.file_size for i in items), sum(i.compress_size for i in items)
    lines.append(f"  {len(items)} files, {human(total)} unpacked, {human(packed)} packed")
    return lines


def run(ctx: StageContext) -> None:
    paths, cfg = ctx.paths, ctx.section("zip")
    allow_demo, skip_demo = bool(ctx.extra.get("allow_demo")), bool(ctx.extra.get("skip_demo"))
    # stage -> profile, read through the results contract (a manifest that does not fit it is one clear line)
    profiles = {stage: contract.read(paths.results, f"{stage}/{MANIFEST}").profile for stage in COMPUTE_STAGES
                if (paths.results / stage / MANIFEST).is_file()}
    if not profiles:
        raise TamrinError(f"no results found under {paths.rel(paths.results)}/: run `python build.py all` first")
    demo = [s for s, p in profiles.items() if p == "demo"]
    if demo and not allow_demo:
        if skip_demo:
            ctx.log.info("zip skipped: the results come from the offline demo profile (not PaliGemma results); "
                         "pass --allow-demo to pack them anyway")
            return
        raise TamrinError(f"refusing to pack demo results ({', '.join(demo)} ran with the offline demo profile, "
                          "not PaliGemma): run with --profile paper, or pass --allow-demo to pack them anyway")
    if missing := ctx.cfg.student.missing_for_zip(cfg.pattern_keys()):
        raise TamrinError(f"the zip needs your details: set {', '.join(missing)} in configs/student.toml "
                          "(copy configs/student.example.toml) or with --set student.KEY=VALUE")
    for name in PDFS:
        if not (paths.report / name).is_file():
            raise TamrinError(f"missing {paths.rel(paths.report / name)}: run `python build.py report` (or "
                              "`python build.py report-only`) first")

    ensure_notebook(ctx)
    entries = zip_entries(paths, cfg.include_adapter)
    if hits := scan([(e.arc, readable_text(e.src)) for e in entries]):
        more = f" (and {len(hits) - 1} more: {'; '.join(hits[1:4])})" if len(hits) > 1 else ""
        raise TamrinError(f"refusing to pack the zip: {hits[0]}{more}; remove it from the file (and revoke a "
                          "leaked token at huggingface.co/settings/tokens), then run the zip again")

    dest = paths.dist / zip_name(cfg.name_pattern, ctx.cfg.student)
    items = write_zip(entries, dest, cfg.max_mb)
    if demo:
        ctx.log.warning(f"packed DEMO results ({', '.join(demo)}) because of --allow-demo: they are not "
                        "PaliGemma results — do not hand this zip in as your answer")
    ctx.log.info(f"wrote {paths.rel(dest)} ({human(dest.stat().st_size)}); contents:")
    for line in summary(items):
        ctx.log.info(line)
    for it in items:
        ctx.log.debug(f"    {it.filename}  {human(it.file_size)}")


# ---------------------------------------------------------------------------------------------- the notebook

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
    if unknown := set(values) - {line.split(" =")[0] for line in cell.source.splitlines() if " = " in line}:
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


def write_notebook(ctx: StageContext) -> None:
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
    ctx.log.info(f"wrote {ctx.paths.rel(ipynb)} and {ctx.paths.rel(html_file)} (open the .ipynb in Colab or Kaggle)")


def ensure_notebook(ctx: StageContext) -> None:
    """For the zip: build the notebook when dist/ has none; keep one that is there (it may be a copy the
    student ran and saved with its outputs) and refresh only its HTML export when missing or older."""
    import nbformat

    ipynb, html_file = ctx.paths.dist / IPYNB, ctx.paths.dist / HTML
    if not ipynb.is_file():
        return write_notebook(ctx)
    try:
        nb = nbformat.read(ipynb, as_version=4)
        nbformat.validate(nb)
    except Exception as e:  # noqa: BLE001 - any parse or schema failure means the same to the user
        raise TamrinError(f"{ctx.paths.rel(ipynb)} is not a valid notebook ({type(e).__name__}); delete it and "
                          "the zip rebuilds it (or run `python build.py notebook`)") from None
    if not html_file.is_file() or html_file.stat().st_mtime < ipynb.stat().st_mtime:
        write_text(html_file, export_html(nb))
        ctx.log.info(f"exported {ctx.paths.rel(ipynb)} → {ctx.paths.rel(html_file)}")


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
