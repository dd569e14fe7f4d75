"""`build.py doctor`'s preflight checks that do not train (the GPU, the hub token and the gated model's access, disk
space, Python and packages, the processor on a real example, the first dataset rows), their outcome type and table.
`doctor.run` runs them and timing.py's in order, each within a time budget and without a traceback."""
from __future__ import annotations

import platform
import shutil
import time
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

from .. import ROOT
from ..data.hub import one_line as _short

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"


@dataclass
class Check:
    name: str
    status: str  # OK | WARN | FAIL | SKIP
    result: str  # what was found, one line
    fix: str = ""  # what to do (empty when nothing)
    details: list[str] = field(default_factory=list)  # extra lines printed under the table (samples, rows)


@dataclass
class Facts:
    """What earlier checks learned, for the later ones."""
    profile: str
    gpu: bool = False
    device_name: str = "cpu"
    hub_reachable: Optional[bool] = None
    hub_reason: str = ""
    model_access: Optional[bool] = None
    examples: list[dict] = field(default_factory=list)  # {image (PNG bytes), question, answer, qtype}
    data_seconds_per_row: Optional[float] = None
    questions_per_row: Optional[float] = None
    source: Any = None  # where the model loads from (hub id, folder, or the tiny base built here)
    processor: Any = None
    work_dir: Any = None
    timing: Any = None  # the timed steps' StepTiming


def render(checks: list[Check]) -> str:
    """A three-column table: check, result, what to do; then each check's detail lines."""
    name_w = max(len("check"), *(len(c.name) for c in checks))
    rows = [f"{'check':<{name_w}}  {'status':<6}  result — what to do", "-" * (name_w + 40)]
    rows += [f"{c.name:<{name_w}}  {c.status:<6}  {c.result}" + (f" — {c.fix}" if c.fix else "") for c in checks]
    for c in checks:
        if c.details:
            rows += ["", f"{c.name}:", *(f"  {line}" for line in c.details)]
    return "\n".join(rows)


def unreachable(name: str, what: str, facts: Facts) -> Check:
    """The row of a check that needs the hub when an earlier one found it out of reach."""
    cause, _, fix = facts.hub_reason.partition(": ")
    return Check(name, FAIL, f"{what}: {cause}", fix)


def can_start(checks: list[Check]) -> bool:
    return not any(c.status == FAIL for c in checks)


T4_CLASS_GIB = 14.0  # the paper profile is sized for a 16 GB T4 (15 GiB usable)


def check_gpu(facts: Facts, cfg) -> Check:
    import torch

    from ..vlm.model import DTYPE_NAMES, resolve_compute_dtype

    if not torch.cuda.is_available():
        if facts.profile == "demo":
            return Check("gpu", SKIP, "no CUDA GPU (the demo runs on CPU)")
        return Check("gpu", FAIL, "no CUDA GPU visible to torch",
                     "the paper profile needs one: Colab Runtime → Change runtime type → T4 GPU; Kaggle Settings → "
                     "Accelerator → GPU (or use --profile demo)")
    facts.gpu = True
    props = torch.cuda.get_device_properties(0)
    facts.device_name = props.name
    mem = props.total_memory / 2 ** 30
    dtype = resolve_compute_dtype(cfg.train.compute_dtype, torch.device("cuda", 0))
    how = "bf16" if dtype == torch.bfloat16 else \
        f"{DTYPE_NAMES[dtype]} (no native bf16: fp32 LoRA weights + grad scaler)"
    line = f"{props.name}, {mem:.1f} GiB, compute capability {props.major}.{props.minor} → compute {how}"
    if mem < T4_CLASS_GIB and facts.profile == "paper":
        return Check("gpu", FAIL, line, f"below the {T4_CLASS_GIB:g} GiB the paper profile is sized for: lower "
                     "train.batch_size and raise train.grad_accum, or use a larger GPU")
    return Check("gpu", OK, line)


def check_access(facts: Facts, cfg) -> Check:
    from .. import profiles

    name, model = "hf token + access", cfg.model.id
    if cfg.model.kind == "tiny":
        return Check(name, SKIP, "the demo's tiny model is built offline; no hub needed")
    reachable, why = profiles.hub_reachable()
    facts.hub_reachable, facts.hub_reason = reachable, why
    cause, _, fix = why.partition(": ")
    if Path(str(model)).is_dir():
        return Check(name, OK, f"model.id is a local folder ({Path(model).name}); no token needed")
    if not profiles.hf_token():
        return Check(name, FAIL, "no Hugging Face token" + ("" if reachable else f"; {cause}"),
                     "store a read token (https://huggingface.co/settings/tokens) as HF_TOKEN or run `hf auth login`"
                     + ("" if reachable else f"; {fix}"))
    if not reachable:
        return Check(name, FAIL, cause, fix)
    ok, reason = profiles.hub_access(model)
    facts.model_access = ok
    cause, _, fix = reason.partition(": ")
    return Check(name, OK, reason) if ok else Check(name, FAIL, cause, fix)


GB = 10 ** 9
CACHE_EXTRA_GB = 1.3  # the processor and tokenizer files, and room to spare beside the weights
# results: dataset images (~0.2 GB), adapters and resumable checkpoints.
RESULTS_GB = {"paper": 2.0, "demo": 0.5}


def _existing(path: Path) -> Path:
    path = Path(path).expanduser()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def planned_dtype(cfg, gpu: bool):
    """The compute dtype the run will use: this GPU's (as `auto` resolves it), else a T4's (fp16), the notebook's."""
    import torch

    from ..vlm.model import resolve_compute_dtype

    if gpu:
        return resolve_compute_dtype(cfg.train.compute_dtype, torch.device("cuda", 0))
    return torch.float16 if cfg.train.compute_dtype in ("auto", "fp16") else resolve_compute_dtype(
        cfg.train.compute_dtype, torch.device("cpu"))


def check_disk(profile: str, paths, local_model: bool, model_id: str = "", compute_dtype=None) -> Check:
    from ..errors import hub_cache_dir
    from ..vlm.model import HALF_REVISIONS, MAIN_DOWNLOAD_GB, download_gb

    download = 0.0 if local_model or not model_id else download_gb(model_id, compute_dtype)
    needs = {"model cache": download + CACHE_EXTRA_GB if download else 0.0,
             "results": RESULTS_GB.get(profile, RESULTS_GB["paper"])}
    where = {"model cache": Path(hub_cache_dir()), "results": paths.results}
    found, short = [], []
    for name, path in where.items():
        free = shutil.disk_usage(_existing(path)).free / GB
        found.append(f"{name} {free:.0f} GB free")
        if free < needs[name]:
            short.append(f"{name} needs {needs[name]:.1f} GB ({free:.1f} GB free at {paths.rel(_existing(path))})")
    if download:
        revision = HALF_REVISIONS.get(compute_dtype)
        found.append(f"first model download about {download:.1f} GB ("
                     + (f"the {revision} revision; {MAIN_DOWNLOAD_GB:g} GB if it is missing)" if revision
                        else "main's float32 weights)"))
    if short:
        return Check("disk", FAIL, "; ".join(short), "free space, or set HF_HOME / --results-dir to a larger disk")
    return Check("disk", OK, ", ".join(found))


def project_requirements() -> tuple[str, list[str]]:
    """(requires-python, dependencies) of the checkout's pyproject.toml, else of the installed package's metadata."""
    path = ROOT / "pyproject.toml"
    if path.is_file():
        project = tomllib.loads(path.read_text(encoding="utf-8"))["project"]
        return project["requires-python"], project["dependencies"]
    return (metadata.metadata("tamrin").get("Requires-Python", ""),
            [r for r in (metadata.requires("tamrin") or []) if "extra ==" not in r])


def check_python_and_packages(facts: Facts) -> Check:
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    python, (needed, dependencies) = platform.python_version(), project_requirements()
    if needed and not SpecifierSet(needed).contains(python, prereleases=True):
        return Check("python + packages", FAIL, f"Python {python}",
                     f"Tamrin needs Python {needed} (what its pinned packages need): use a newer Python")
    bad, versions = [], {}
    for line in dependencies:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            have = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            bad.append(f"{req.name} missing")
            continue
        versions[req.name] = have
        if not req.specifier.contains(have, prereleases=True):  # a local label (+cu124) is ignored (PEP 440)
            bad.append(f"{req.name} {have} (needs {req.specifier})")
    shown = ", ".join(f"{n} {versions[n]}" for n in ("torch", "transformers", "peft", "bitsandbytes", "datasets")
                      if n in versions)
    if bad:
        return Check("python + packages", FAIL, "; ".join(bad),
                     "run `bash scripts/install.sh` (or pip install -e . -c constraints/tested.txt); torch must be "
                     "≥ 2.6 with the build for your CUDA")
    return Check("python + packages", OK, f"Python {python}; {shown}")


def check_bitsandbytes(facts: Facts) -> Check:
    """NF4 quantize + 4-bit matmul on the device the run uses (vlm/model.nf4_supported: tried, not guessed)."""
    import torch

    from ..vlm.model import nf4_supported

    try:
        import bitsandbytes
        version = bitsandbytes.__version__
    except Exception as e:  # noqa: BLE001 - a broken build raises anything at import
        return Check("bitsandbytes", FAIL, f"import failed ({type(e).__name__})",
                     "pip install bitsandbytes -c constraints/tested.txt")
    if facts.profile == "demo":
        ok = nf4_supported(torch.device("cpu"))
        return Check("bitsandbytes", OK if ok else WARN, f"{version}: NF4 on CPU {'works' if ok else 'unavailable'}",
                     "" if ok else "the demo falls back to unquantized weights (model.quantization = auto)")
    if not facts.gpu:
        return Check("bitsandbytes", FAIL, f"{version}: its CUDA kernels cannot load without a CUDA GPU",
                     "run on a GPU machine (Colab/Kaggle: a T4 runtime)")
    if nf4_supported(torch.device("cuda", 0)):
        return Check("bitsandbytes", OK, f"{version}: NF4 quantize + 4-bit matmul ran on the GPU")
    return Check("bitsandbytes", FAIL, f"{version}: the CUDA build did not run an NF4 matmul",
                 "reinstall bitsandbytes for this CUDA (pip install --force-reinstall bitsandbytes)")


def example_rows(facts: Facts, folder: Path, n: int) -> list[dict]:
    """The first `n` dataset examples as data-stage rows, their images saved as PNG under `folder`/images."""
    from ..data.stage import to_png

    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, e in enumerate(facts.examples[:n]):
        (folder / "images" / f"ex{i:03d}.png").write_bytes(to_png(e["image"]))
        rows.append({"id": f"ex{i:03d}", "image": f"images/ex{i:03d}.png", "question": e["question"],
                     "answer": str(e["answer"]), "qtype": e["qtype"]})
    return rows


def check_processor(facts: Facts, cfg) -> Check:
    from ..vlm import batches
    from ..vlm.finetune import base_source
    from ..vlm.model import load_processor

    local = cfg.model.kind == "tiny" or Path(str(cfg.model.id)).is_dir()
    if not local and facts.hub_reachable is False:
        return unreachable("processor", f"{cfg.model.id} not loaded", facts)
    if not local and facts.model_access is False:
        return Check("processor", FAIL, f"{cfg.model.id} not loaded: no access (see 'hf token + access')",
                     "fix the token/license first")
    if not facts.examples:
        return Check("processor", FAIL, "no dataset example to tokenize (see 'dataset')", "fix the dataset first")
    # where finetune would load the base from (the tiny demo base is built here from the examples' texts)
    facts.source = base_source(cfg.model, facts.work_dir, example_rows(facts, facts.work_dir, len(facts.examples)))
    processor = facts.processor = load_processor(facts.source)
    row = example_rows(facts, facts.work_dir, 1)[0]
    b = batches.encode(processor, [row], batches.ImageStore(facts.work_dir), cfg.model.prompt_prefix, with_answers=True)
    ids, types = b["input_ids"][0].tolist(), b["token_type_ids"][0].tolist()
    tok = processor.tokenizer
    image_id = getattr(processor, "image_token_id", None) or tok.convert_tokens_to_ids(batches.IMAGE_TOKEN)
    n_image = sum(t == image_id for t in ids)
    prefix = sum(t == 0 for t in types) - n_image
    suffix = sum(t == 1 for t in types)
    expected = getattr(processor, "image_seq_length", None)
    line = (f"{n_image} image tokens, prefix {prefix} tokens (BOS + prompt + newline), suffix {suffix} "
            f"(answer + EOS)")
    details = [f"example: {row['question']!r} → {row['answer']!r}",
               f"decoded prefix: {tok.decode([t for t, k in zip(ids, types) if k == 0 and t != image_id])!r}",
               f"decoded suffix: {tok.decode([t for t, k in zip(ids, types) if k == 1])!r}"]
    if expected is not None and n_image != expected:
        return Check("processor", FAIL, line, f"expected {expected} image tokens: the processor does not match the "
                     "model (check model.id)", details)
    if "labels" not in b:
        return Check("processor", FAIL, line + "; no labels returned", "this transformers version's processor "
                     "builds no labels from suffix=: install the tested set (constraints/tested.txt)", details)
    labelled = [i for i, lab in enumerate(b["labels"][0].tolist()) if lab != batches.IGNORE]
    on_suffix = [i for i, k in enumerate(types) if k == 1]
    if labelled != on_suffix:
        return Check("processor", FAIL, line + f"; labels on {len(labelled)} positions, not the {suffix} suffix ones",
                     "the loss would train on the prompt: install the tested transformers (constraints/tested.txt)",
                     details)
    return Check("processor", OK, line + "; labels exactly on the suffix", details=details)


N_ROWS = 20
UNPARSED_WARN = 0.2  # more than this share of pairs lost to cleaning: the rules probably miss the row format


def _decodable(p) -> list[dict]:
    """The cleaned triples whose image decodes (as the data stage would keep them), with PNG bytes."""
    from ..data.stage import BadImage, to_png

    def png(data: bytes) -> bytes | None:
        try:
            return to_png(data)
        except BadImage:
            return None

    pngs = {i: png(data) for i, data in enumerate(p.images)}
    return [{"image": pngs[c.image], "question": c.question, "answer": c.answer, "qtype": c.qtype}
            for c in p.cleaned if c.image >= 0 and pngs.get(c.image)]


def _hub(facts: Facts, cfg) -> Check:
    from ..data.hub import preview

    d = cfg.data
    local = Path(d.hub_id).is_dir()
    if not local and facts.hub_reachable is False:
        return unreachable("dataset", f"{d.hub_id} not read", facts)
    t = time.perf_counter()
    p = preview(d, N_ROWS)
    seconds = time.perf_counter() - t
    if not p.cleaned:
        return Check("dataset", FAIL, f"{p.rows} rows read, none gave a CLEVR question/answer",
                     "the row format differs from what data/cleaning.py handles: see the raw rows below; set "
                     "data.hub_layout / the column keys", [f"raw: {_short(u)} → {_short(a, 40)}" for u, a in p.raw[:3]])
    facts.examples = _decodable(p)
    facts.data_seconds_per_row = seconds / max(1, p.rows)
    facts.questions_per_row = len(p.cleaned) / max(1, p.rows)
    details = [f"raw row 1, pair {i + 1}: user {_short(u)!r} | assistant {_short(a, 40)!r}"
               for i, (u, a) in enumerate(p.raw[:3])]
    details += [f"cleaned: ({c.question!r}, {c.answer!r}, {c.qtype})" for c in p.cleaned[:3]]
    line = (f"{d.hub_id}{':' + d.hub_config if d.hub_config else ''}: {p.rows} rows, {p.pairs} QA pairs, "
            f"{p.unparsed_share:.0%} not parsed")
    if p.unparsed_share > UNPARSED_WARN:
        return Check("dataset", WARN, line, "many pairs lost to cleaning: compare the raw and cleaned rows below",
                     details)
    return Check("dataset", OK, line, details=details)


def _clevr_dir(facts: Facts, cfg) -> Check:
    from ..data.clevr_dir import image_id_of, iter_questions
    from ..data.cleaning import classify
    from ..contract.facts import normalize_answer

    root, split = Path(cfg.data.path).expanduser(), cfg.data.clevr_splits[0]
    qfile = root / "questions" / f"CLEVR_{split}_questions.json"
    if not qfile.is_file():
        return Check("dataset", FAIL, f"missing {qfile}", "set data.path to the CLEVR_v1.0 folder")
    examples = []
    for q in iter_questions(qfile):
        path = root / "images" / split / image_id_of(q, split)[1]
        answer = normalize_answer(str(q.get("answer", "")))
        if path.is_file():
            examples.append({"image": path.read_bytes(), "question": q["question"], "answer": answer,
                             "qtype": classify(q["question"], answer, q.get("program"))})
        if len(examples) >= N_ROWS:
            break
    if not examples:
        return Check("dataset", FAIL, f"no readable image for the first questions of {qfile.name}",
                     f"check {root / 'images' / split}")
    facts.examples = examples
    return Check("dataset", OK, f"CLEVR_v1.0 {split}: first {len(examples)} questions with their images read",
                 details=_example_lines(examples))


def _synthetic(facts: Facts, cfg) -> Check:
    from ..data.synthetic import make_scene

    d = cfg.data
    t = time.perf_counter()
    examples = []
    for i in range(N_ROWS):
        s = make_scene(d.seed, i, image_size=d.image_size, questions_per_scene=d.questions_per_scene,
                       min_objects=d.min_objects, max_objects=d.max_objects)
        examples += [{"image": s.png, "question": q.question, "answer": q.answer, "qtype": q.qtype}
                     for q in s.questions]
    facts.examples = examples
    facts.data_seconds_per_row = (time.perf_counter() - t) / N_ROWS
    facts.questions_per_row = len(examples) / N_ROWS
    return Check("dataset", OK, f"synthetic: {N_ROWS} scenes rendered, {len(examples)} questions",
                 details=_example_lines(examples))


def _example_lines(examples: list[dict]) -> list[str]:
    return [f"({e['question']!r}, {e['answer']!r}, {e['qtype']})" for e in examples[:3]]


def check_dataset(facts: Facts, cfg) -> Check:
    return {"hub": _hub, "clevr_dir": _clevr_dir, "synthetic": _synthetic}[cfg.data.source](facts, cfg)
