"""The submission zip and the Colab/Kaggle notebook, on a small fixture tree built in tmp_path."""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import zipfile
from pathlib import Path

import nbformat
import pytest
from pypdf import PdfWriter

from tamrin import ROOT
from tamrin.cli import main
from tamrin.config import load_config
from tamrin.errors import TamrinError
from tamrin.runner import Paths, stage_context
from tamrin import submit
from tamrin.submit import zip_name

ZIP = "HW1_Mohammadi_810100000.zip"
FIXTURE = ROOT / "tests" / "fixtures" / "results"
FAKE_TOKEN = "hf_" + "Ab3" * 12  # built at run time so this file itself never holds a token-shaped string
STUDENT = {"first_name_fa": "علی", "last_name_fa": "محمدی", "first_name_en": "Ali",
           "last_name_en": "Mohammadi", "student_number": "810100000"}

# What the zip of the fixture must hold, exactly.
EXPECTED = {
    "report.pdf", "supplement.pdf", "notebook.ipynb", "notebook.html",
    "build.py", "README.md", "pyproject.toml", "Makefile",
    "code/tamrin/__init__.py", "code/tamrin/submit/__init__.py",
    "templates/report.typ.j2", "templates/style.typ",
    "configs/paper.toml", "configs/demo.toml", "configs/student.example.toml",
    "scripts/install.sh", "bench/bench_train.py",
    "results/data/manifest.json", "results/data/train.jsonl", "results/data/test.jsonl", "results/data/stats.json",
    "results/finetune/manifest.json", "results/finetune/loss.jsonl", "results/finetune/summary.json",
    "results/eval/manifest.json", "results/eval/samples.json",
    "results/eval/base/metrics.json", "results/eval/base/predictions.jsonl",
    "results/eval/finetuned/metrics.json", "results/eval/finetuned/predictions.jsonl",
    "results/memory/manifest.json", "results/memory/memory.json",
    "results/derive/manifest.json", "results/derive/derivations.json", "results/flow/manifest.json",
    "results/flow/experiment.json",
    "figures/loss.svg", "figures/rouge.pdf",
}
ADAPTER = {"results/finetune/adapter/adapter_config.json", "results/finetune/adapter/adapter_model.safetensors"}


def _w(path: Path, data: str | bytes | dict | list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, (dict, list)):
        data = json.dumps(data, ensure_ascii=False)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")


def _png(path: Path, color: str = "red") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)


def _pdf(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    w = PdfWriter()
    w.add_blank_page(width=72, height=72)
    with open(path, "wb") as f:
        w.write(f)


def make_tree(root: Path, profile: str = "paper", student: dict | None = STUDENT) -> Path:
    """A miniature Tamrin checkout after a full run, with every kind of file the zip must leave out."""
    (root / "configs").mkdir(parents=True)
    for name in ("paper.toml", "demo.toml", "student.example.toml"):
        shutil.copy(ROOT / "configs" / name, root / "configs" / name)
    if student is not None:
        _w(root / "configs/student.toml", "[student]\n" + "".join(f'{k} = "{v}"\n' for k, v in student.items()))
    # code
    for rel in ("build.py", "README.md", "pyproject.toml", "Makefile", "code/tamrin/__init__.py",
                "code/tamrin/submit/__init__.py", "templates/report.typ.j2", "templates/style.typ",
                "scripts/install.sh", "bench/bench_train.py"):
        _w(root / rel, f"# {rel}\n")
    # never packed: caches, venvs, secrets files, git internals, stray weights
    _w(root / "code/tamrin/__pycache__/submit.cpython-311.pyc", b"\0pyc")
    _w(root / "code/tamrin/submit/old.pyc", b"\0pyc")
    _w(root / ".env", f"HF_TOKEN={FAKE_TOKEN}\n")  # holds a token, but is never packed (so never refused)
    _w(root / ".venv/pyvenv.cfg", "home = /usr\n")
    _w(root / ".venv/lib/site.py", "x = 1\n")
    _w(root / "code/localenv/pyvenv.cfg", "home = /usr\n")  # a venv under another name inside code/
    _w(root / "code/localenv/lib/mod.py", "x = 1\n")
    _w(root / "code/tamrin.egg-info/PKG-INFO", "Name: tamrin\n")
    _w(root / "code/tamrin/stray_weights.safetensors", b"\0" * 64)
    _w(root / ".pytest_cache/v/cache/lastfailed", "{}")
    _w(root / "notes.txt", "not part of the code\n")
    # results
    for stage in ("data", "finetune", "eval", "memory", "derive", "flow"):  # real manifests (they are validated)
        manifest = json.loads((FIXTURE / stage / "manifest.json").read_text(encoding="utf-8"))
        _w(root / f"results/{stage}/manifest.json", {**manifest, "profile": profile})
        _w(root / f"results/{stage}/log.txt", "log\n")
    test_rows = [{"id": f"q{i}", "image": f"images/img{i}.png", "question": f"What color is object {i}?",
                  "answer": "red", "qtype": "query_color", "image_id": f"img{i}", "source": "fixture"} for i in range(3)]
    _w(root / "results/data/train.jsonl", json.dumps(test_rows[0]) + "\n")
    _w(root / "results/data/test.jsonl", "".join(json.dumps(r) + "\n" for r in test_rows))
    _w(root / "results/data/stats.json", {"train": 1, "test": 3})
    for i in range(3):
        _png(root / f"results/data/images/img{i}.png")
    _w(root / "results/finetune/loss.jsonl",
       "".join(json.dumps({"step": s, "loss": 3.0 / s, "lr": 1e-4, "epoch": s / 30, "seconds": s}) + "\n"
               for s in range(1, 31)))
    _w(root / "results/finetune/summary.json", {"trainable": 10, "total": 100})
    _w(root / "results/finetune/adapter/adapter_config.json", {"r": 16})
    _w(root / "results/finetune/adapter/adapter_model.safetensors", b"\0" * 256)
    _w(root / "results/finetune/checkpoint-20/optimizer.pt", b"\0" * 256)
    _w(root / "results/finetune/checkpoint-20/trainer_state.json", {"step": 20})
    metrics = json.loads((FIXTURE / "eval/base/metrics.json").read_text(encoding="utf-8"))
    for model, em in (("base", 0.2), ("finetuned", 0.9)):
        rouge = {"f": em, "p": em, "r": em, "ci_low": em - 0.05, "ci_high": em + 0.05}
        _w(root / f"results/eval/{model}/metrics.json",
           {**metrics, "n": 3, "rouge1": rouge, "rougeL": rouge, "exact_match": em})
        _w(root / f"results/eval/{model}/predictions.jsonl",
           "".join(json.dumps({**r, "prediction": "red" if model == "finetuned" else "blue"}) + "\n"
                   for r in test_rows))
    _w(root / "results/eval/samples.json", {"seed": 0, "ids": [r["id"] for r in test_rows], "samples": [
        {k: r[k] for k in ("id", "image", "question", "answer", "qtype")} | {"base": "blue", "finetuned": "red"}
        for r in test_rows]})
    _w(root / "results/memory/memory.json", {"params": 3})
    _w(root / "results/derive/derivations.json", [{"name": "fm", "passed": True}])
    _w(root / "results/flow/experiment.json", {"seeds": [0]})
    _w(root / "results/.work/finetune/abc/state.json", {"step": 5})
    _w(root / "results/.staging/eval-123/metrics.json", {"partial": True})
    _w(root / "results/last-error.txt", "Traceback\n")
    # products
    _w(root / "figures/loss.svg", "<svg xmlns='http://www.w3.org/2000/svg'/>")  # the name the report draws
    _pdf(root / "figures/rouge.pdf")
    _pdf(root / "report/report.pdf")
    _pdf(root / "report/supplement.pdf")
    _w(root / "report/report.typ", "= report\n")
    return root


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """One fixture tree with its notebook already in dist/, copied by each test (building it is the slow part)."""
    root = make_tree(tmp_path_factory.mktemp("template"))
    submit.write_notebook(zip_ctx(root))
    return root


def tree(tmp_path: Path, template: Path, profile: str = "paper", student: dict | None = STUDENT,
         notebook: bool = True) -> Path:
    """A copy of the template; `profile` rewrites every manifest, `student` rewrites configs/student.toml."""
    root = tmp_path / "repo"
    shutil.copytree(template, root, symlinks=True)
    if not notebook:
        shutil.rmtree(root / "dist")
    for m in (root / "results").glob("*/manifest.json"):
        _w(m, {**json.loads(m.read_text()), "profile": profile})
    if student is not STUDENT:
        _w(root / "configs/student.toml", "[student]\n" + "".join(f'{k} = "{v}"\n' for k, v in (student or {}).items()))
    return root


def zip_ctx(root: Path, *, allow_demo: bool = False, skip_demo: bool = False, overrides: tuple = (),
            profile: str = "paper"):
    ctx = stage_context("zip", load_config(profile, overrides=list(overrides), root=root), Paths(root))
    ctx.extra.update(allow_demo=allow_demo, skip_demo=skip_demo)
    return ctx


def names(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        return set(zf.namelist())


def no_zip(root: Path) -> bool:
    dist = root / "dist"
    return not dist.exists() or not [p for p in dist.iterdir() if ".zip" in p.name]


def test_zip_holds_exactly_the_expected_files(tmp_path, template):
    root = tree(tmp_path, template, notebook=False)  # the zip builds the notebook itself
    submit.run(zip_ctx(root))
    out = root / "dist" / ZIP
    assert names(out) == EXPECTED
    with zipfile.ZipFile(out) as zf:
        nb = nbformat.reads(zf.read("notebook.ipynb").decode(), as_version=4)
        assert zf.read("report.pdf") == (root / "report/report.pdf").read_bytes()
        assert zf.read("supplement.pdf") == (root / "report/supplement.pdf").read_bytes()
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in zf.infolist()}
    assert modes["notebook.ipynb"] == 0o644  # readable once unpacked, though atomic writes made it 0600
    nbformat.validate(nb)
    assert not [p.name for p in (root / "dist").iterdir() if p.name.endswith(".tmp")]


def test_git_checkout_chooses_code_with_git_ls_files(tmp_path, template):
    root = tree(tmp_path, template)
    _w(root / ".gitignore", "*.local\n.venv/\n.env\n__pycache__/\n")
    _w(root / "code/tamrin/notes.local", "ignored by git\n")  # the walk would pack it; git does not
    git = ["git", "-C", str(root)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "build.py", "code/tamrin/__init__.py", "configs/paper.toml"], check=True)
    (root / "Makefile").unlink()  # neither tracked nor present any more
    submit.run(zip_ctx(root))
    # tracked and untracked-but-not-ignored code both go in; the git-ignored file does not
    assert names(root / "dist" / ZIP) == EXPECTED - {"Makefile"}

    (root / ".git").rename(root / "git-off")  # no checkout: the walk packs the same code plus notes.local
    (root / "dist" / ZIP).unlink()
    submit.run(zip_ctx(root))
    assert names(root / "dist" / ZIP) == (EXPECTED - {"Makefile"}) | {"code/tamrin/notes.local"}


def test_adapter_only_when_asked(tmp_path, template):
    root = tree(tmp_path, template)
    submit.run(zip_ctx(root, overrides=("zip.include_adapter=true",)))
    assert names(root / "dist" / ZIP) == EXPECTED | ADAPTER


@pytest.mark.parametrize("where", ["results/eval/base/predictions.jsonl", "code/tamrin/submit/__init__.py"])
def test_planted_token_is_refused_naming_the_file(tmp_path, template, where):
    root = tree(tmp_path, template)
    with open(root / where, "a", encoding="utf-8") as f:
        f.write(f"token = {FAKE_TOKEN}\n")
    with pytest.raises(TamrinError) as e:
        submit.run(zip_ctx(root))
    assert where in str(e.value) and FAKE_TOKEN not in str(e.value)
    assert no_zip(root)


def test_value_of_hf_token_is_refused(tmp_path, template, monkeypatch):
    root = tree(tmp_path, template)
    monkeypatch.setenv("HF_TOKEN", "my-secret-value-42")
    _w(root / "results/flow/experiment.json", {"note": "my-secret-value-42"})
    with pytest.raises(TamrinError, match="results/flow/experiment.json"):
        submit.run(zip_ctx(root))
    assert no_zip(root)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_demo_results_refused_skipped_or_allowed(tmp_path, template):
    root = tree(tmp_path, template, profile="demo")
    with pytest.raises(TamrinError, match="--allow-demo"):
        submit.run(zip_ctx(root, profile="demo"))
    assert no_zip(root)
    ctx = zip_ctx(root, profile="demo", skip_demo=True)  # `all` / `report-only`: a notice, no error
    ctx.log = logging.getLogger("test_submit.skip")
    ctx.log.setLevel(logging.INFO)
    ctx.log.addHandler(collect := _Collect())
    submit.run(ctx)
    assert no_zip(root)
    assert len(collect.lines) == 1 and collect.lines[0].startswith("zip skipped")
    submit.run(zip_ctx(root, profile="demo", allow_demo=True))
    assert names(root / "dist" / ZIP) == EXPECTED


def test_one_demo_stage_is_enough_to_refuse(tmp_path, template):
    root = tree(tmp_path, template)
    m = root / "results/eval/manifest.json"
    _w(m, {**json.loads(m.read_text()), "profile": "demo"})
    with pytest.raises(TamrinError, match=r"eval ran with the offline demo profile"):
        submit.run(zip_ctx(root))


def test_a_manifest_that_does_not_fit_the_contract_is_one_line(tmp_path, template):
    root = tree(tmp_path, template)
    _w(root / "results/eval/manifest.json", {"stage": "eval", "profile": "demo"})
    with pytest.raises(TamrinError, match=r"results/eval/manifest.json does not fit the results contract"):
        submit.run(zip_ctx(root))


def test_cli_exit_codes(tmp_path, template, capsys):
    root = tree(tmp_path, template, profile="demo")
    assert main(["zip", "--profile", "demo"], paths=Paths(root)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: refusing to pack demo results") and "\n" not in err
    assert main(["zip", "--profile", "demo", "--allow-demo"], paths=Paths(root)) == 0
    assert (root / "dist" / ZIP).is_file()


def test_missing_student_info_names_the_keys(tmp_path, template):
    root = tree(tmp_path, template, student={k: v for k, v in STUDENT.items() if k not in ("student_number", "last_name_fa")})
    with pytest.raises(TamrinError) as e:
        submit.run(zip_ctx(root))
    assert "student.student_number" in str(e.value) and "student.last_name_fa" in str(e.value)
    assert "student.last_name_en" not in str(e.value)
    assert no_zip(root)
    # a key used only by the name pattern becomes required too
    root2 = tree(tmp_path / "b", template, student={k: v for k, v in STUDENT.items() if k != "first_name_en"})
    with pytest.raises(TamrinError, match=r"student\.first_name_en"):
        submit.run(zip_ctx(root2, overrides=("zip.name_pattern=HW4_{first_name_en}_{student_number}.zip",)))


def test_size_limit_lists_the_largest_items(tmp_path, template):
    import os

    root = tree(tmp_path, template)
    _w(root / "figures/big.png", os.urandom(300_000))  # incompressible
    with pytest.raises(TamrinError) as e:
        submit.run(zip_ctx(root, overrides=("zip.max_mb=0.1",)))
    msg = str(e.value)
    assert "zip.max_mb" in msg and msg.index("figures/big.png") < 200
    assert no_zip(root)


def test_invalid_or_missing_report_pdf_is_refused(tmp_path, template):
    root = tree(tmp_path, template)
    (root / "report/report.pdf").write_bytes(b"%PDF-1.7 truncated nonsense")
    with pytest.raises(TamrinError, match="not a valid PDF"):
        submit.run(zip_ctx(root))
    assert no_zip(root)
    (root / "report/report.pdf").unlink()
    with pytest.raises(TamrinError, match="build.py report"):
        submit.run(zip_ctx(root))


def test_zip_name_from_pattern():
    class S:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    assert zip_name("HW1_{last_name_en}_{student_number}.zip", S(last_name_en="Van Dam", student_number="81/01")) \
        == "HW1_Van_Dam_81_01.zip"
    assert zip_name("HW4-{last_name_en}", S(last_name_en="Rezaei")) == "HW4-Rezaei.zip"


def test_notebook_is_valid_and_exported(template):
    """`python build.py notebook` (run by the template fixture) wrote both files."""
    ipynb, html = template / "dist/notebook.ipynb", template / "dist/notebook.html"
    nb = nbformat.read(ipynb, as_version=4)
    nbformat.validate(nb)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    for src in code:
        compile(src, "cell", "exec")  # every cell is plain Python (no IPython-only syntax)
    text = "\n".join(code)
    assert "userdata.get(\"HF_TOKEN\")" in text and "get_secret(\"HF_TOKEN\")" in text
    params = next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert "BATCH_SIZE = 4" in params and "GRAD_ACCUM = 4" in params and "MAX_MINUTES = 150.0" in params
    assert "PROFILE = 'paper'" in params
    assert 'sh(sys.executable, "build.py", "all", *CONFIG_ARGS' in text and '"doctor", *CONFIG_ARGS' in text
    assert "keep-torch" in text and "print(_token" not in text
    assert "'student_number': '810100000'" in text  # pre-filled from the student's config
    assert html.stat().st_size > 1000 and "Run everything" in html.read_text(encoding="utf-8")


def test_zip_keeps_a_notebook_already_in_dist(tmp_path, template):
    """A notebook the student ran and saved (with outputs) is packed as is; its HTML is re-exported."""
    root = tree(tmp_path, template)
    nb = nbformat.read(root / "dist/notebook.ipynb", as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="platform: Colab\n")]
    nbformat.write(nb, root / "dist/notebook.ipynb")
    (root / "dist/notebook.html").unlink()
    submit.run(zip_ctx(root))
    with zipfile.ZipFile(root / "dist" / ZIP) as zf:
        assert "platform: Colab" in zf.read("notebook.ipynb").decode()
        assert "platform: Colab" in zf.read("notebook.html").decode()


def test_inline_views_read_the_results(tmp_path, template):
    root = tree(tmp_path, template)
    results = root / "results"
    rows = submit.rouge_rows(results)
    assert [r["model"] for r in rows] == ["base PaliGemma", "fine-tuned (QLoRA)"]
    assert rows[1]["rougeL"] == "0.900 [0.850, 0.950]" and rows[0]["exact match"] == "0.200"
    html = submit.samples_html(results)
    assert html.count("<img src=\"data:image/png;base64,") == 3 and "What color is object 2?" in html
    # the notebook shows the file the report stage draws, under the name figure_specs gives it
    from tamrin.report.context import load_results
    from tamrin.report.figures import figure_specs

    produced = figure_specs(load_results(FIXTURE), 5)["loss"].file
    (root / "figures" / produced).write_text("<svg xmlns='http://www.w3.org/2000/svg'/>", encoding="utf-8")
    assert submit.loss_figure(root / "figures") == root / "figures" / produced
    (root / "figures" / produced).unlink()
    with pytest.raises(FileNotFoundError, match="run the build cell first"):
        submit.loss_figure(root / "figures")
