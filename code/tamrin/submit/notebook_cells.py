"""The Colab/Kaggle notebook as an nbformat object (pure: no I/O).

It installs Tamrin (clone or upload; the tested library versions, and the platform's preinstalled CUDA torch
pinned so pip never replaces it), keeps results on Google Drive (Colab) or in /kaggle/working (Kaggle) so a
disconnect loses nothing, logs in to the Hugging Face hub with the token from the platform's secrets (never
printed), runs `build.py doctor` and then `python build.py all --profile paper` sized for a 16 GB T4, shows the loss curve, the ROUGE table and the
10 samples inline, and downloads the submission zip. Shell steps go through a small Python helper rather
than `!` lines so that a failing step stops "Run all".
"""
from __future__ import annotations

from dataclasses import dataclass, field

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

MODEL_PAGE = "https://huggingface.co/google/paligemma-3b-pt-224"
STUDENT_KEYS = ("first_name_fa", "last_name_fa", "first_name_en", "last_name_en", "student_number")


@dataclass(frozen=True)
class NotebookSettings:
    repo_url: str  # "" = upload the code instead of cloning it
    batch_size: int
    grad_accum: int
    max_minutes: float
    student: dict[str, str] = field(default_factory=dict)  # pre-filled student.* values
    estimate_md: str = ""  # Markdown lines: the time each stage takes on a T4 (throughput model), for the intro
    profile: str = "paper"  # "demo" only for the offline test of the notebook itself
    extra_sets: tuple[str, ...] = ()  # more --set values (the offline test shrinks the run with them)

    def config_args(self) -> list[str]:
        """The profile and settings every `build.py` call of the notebook shares (doctor and all alike)."""
        sets = [f"train.batch_size={self.batch_size}", f"train.grad_accum={self.grad_accum}",
                f"train.max_minutes={self.max_minutes:g}", *self.extra_sets]
        return ["--profile", self.profile, *[a for v in sets for a in ("--set", v)]]

    def build_args(self) -> list[str]:
        """The arguments of `python build.py` in the notebook's run cell."""
        return ["all", *self.config_args(), *(["--allow-demo"] if self.profile == "demo" else [])]

    def doctor_args(self) -> list[str]:
        return ["doctor", *self.config_args()]


INTRO = """\
# Tamrin — homework 4 of *Deep Generative Models* (University of Tehran)

This notebook runs the whole answer on a free **Colab** or **Kaggle** T4 GPU: it installs Tamrin, logs in to the
Hugging Face hub, fine-tunes PaliGemma-3B with QLoRA on a CLEVR subset, evaluates the base and fine-tuned models
with ROUGE, renders the Persian report and packs the submission zip.

**Before you run it**
1. **GPU** — Colab: *Runtime → Change runtime type → T4 GPU*. Kaggle: *Settings → Accelerator → GPU T4 x1*, and
   *Settings → Internet → on* (the model and the data come from the Hugging Face hub).
2. **Model license** — PaliGemma is gated: open {model_page} while logged in and accept the license.
3. **Token** — create a *read* token at https://huggingface.co/settings/tokens and store it as a secret named
   `HF_TOKEN`: Colab: the key icon (*Secrets*) in the left bar, with notebook access switched on; Kaggle:
   *Add-ons → Secrets*. The notebook reads it from there and never prints it.
4. **Your details** — fill in the *Student details* cell below (the zip is named after them).

Then *Run all*. **Disconnects are expected and cost little:** results, checkpoints included, live outside the
session — on Colab in your Google Drive (`MyDrive/tamrin/results`; the notebook asks to mount it), on Kaggle in
`/kaggle/working/tamrin-results` (kept by *Save Version*), elsewhere in `$TAMRIN_RESULTS_DIR`. After a disconnect,
*Run all* again: finished stages are skipped and fine-tuning resumes from its last checkpoint.

**How long it takes on a T4** (throughput model, `tamrin/throughput.py`; the *doctor* cell below replaces this
with a measurement on your GPU before training starts):

{estimate_md}
"""

SETUP = '''\
import codecs, glob, os, shutil, subprocess, sys, zipfile
from pathlib import Path

ON_COLAB = "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ
ON_KAGGLE = "KAGGLE_KERNEL_RUN_TYPE" in os.environ
WORK = "/content" if ON_COLAB else "/kaggle/working" if ON_KAGGLE else os.getcwd()
REPO = os.path.join(WORK, "tamrin")
REPO_URL = {repo_url!r}  # empty: the next cell takes an uploaded copy of the code instead
PROFILE = {profile!r}
os.environ.setdefault("TQDM_MININTERVAL", "10")  # fewer progress-bar updates in a long cell output


def sh(*args, cwd=None):
    """Run a command, streaming its output here; stop the notebook when it fails."""
    p = subprocess.Popen([str(a) for a in args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    decode = codecs.getincrementaldecoder("utf-8")("replace")
    while chunk := os.read(p.stdout.fileno(), 4096):
        sys.stdout.write(decode.decode(chunk))
        sys.stdout.flush()
    if p.wait() != 0:
        raise RuntimeError(f"`{{' '.join(map(str, args[:3]))}} …` failed (exit code {{p.returncode}}); the lines above say why")


print("platform:", "Colab" if ON_COLAB else "Kaggle" if ON_KAGGLE else "local Jupyter")
if not shutil.which("nvidia-smi") and PROFILE != "demo":
    raise RuntimeError("no GPU in this runtime: switch it to a T4 GPU (see the list above) and run again")
if shutil.which("nvidia-smi"):
    sh("nvidia-smi", "--query-gpu=name,memory.total", "--format=csv")

# Results (checkpoints included) live where a disconnect cannot take them: Google Drive on Colab, the saved
# output folder on Kaggle, $TAMRIN_RESULTS_DIR anywhere (every build.py call below reads it).
if os.environ.get("TAMRIN_RESULTS_DIR"):
    RESULTS_DIR = os.environ["TAMRIN_RESULTS_DIR"]
elif ON_COLAB:
    from google.colab import drive
    drive.mount("/content/drive")
    RESULTS_DIR = "/content/drive/MyDrive/tamrin/results"
elif ON_KAGGLE:
    RESULTS_DIR = "/kaggle/working/tamrin-results"
else:
    RESULTS_DIR = ""  # ./results of the checkout
if RESULTS_DIR:
    os.makedirs(RESULTS_DIR, exist_ok=True)
    os.environ["TAMRIN_RESULTS_DIR"] = RESULTS_DIR
    print("results are kept in", RESULTS_DIR)
'''

GET_CODE_MD = """\
## 1. Get Tamrin
With `REPO_URL` set, the code is cloned. Otherwise give it the code yourself: on **Colab** an upload dialog asks
for a zip of Tamrin (the submission zip holds the full code); on **Kaggle** add the zip or the repository folder as
a dataset (*Add Input*) — it appears under `/kaggle/input/`.
"""

GET_CODE = '''\
def find_root(folder):
    """The folder holding build.py (the top of an unpacked copy of Tamrin)."""
    hits = sorted(glob.glob(os.path.join(folder, "**", "build.py"), recursive=True), key=len)
    return os.path.dirname(hits[0]) if hits else None


if find_root(REPO):
    print("Tamrin is already at", find_root(REPO))
elif REPO_URL:
    sh("git", "clone", "--depth", "1", REPO_URL, REPO)
else:
    source = find_root("/kaggle/input") if ON_KAGGLE else None
    archives = sorted(glob.glob("/kaggle/input/**/*.zip", recursive=True)) if ON_KAGGLE else []
    if source:
        shutil.copytree(source, REPO)  # /kaggle/input is read-only; pip needs a writable copy
    else:
        if ON_COLAB and not archives:
            from google.colab import files
            archives = [os.path.abspath(name) for name in files.upload() if name.endswith(".zip")]
        if not archives:
            raise RuntimeError("no Tamrin code found: set REPO_URL above, or upload the Tamrin zip")
        with zipfile.ZipFile(archives[0]) as z:
            z.extractall(REPO)
    if not find_root(REPO):
        raise RuntimeError("the uploaded files hold no build.py: upload a zip of the Tamrin code")
    # A submission zip carries the results of an earlier run without the dataset images: start afresh (results
    # kept in RESULTS_DIR are another folder and stay).
    shutil.rmtree(os.path.join(find_root(REPO), "results"), ignore_errors=True)
REPO = find_root(REPO)
os.chdir(REPO)
print("working in", REPO)
'''

INSTALL_MD = """\
## 2. Install
`pip install -e .` installs Tamrin with the library versions it was tested with (`constraints/tested.txt`). The
platform's torch (built for its CUDA) is kept with a second constraint, so pip never downloads another build; it
must be ≥ 2.6 (transformers 5 needs it).
"""

INSTALL = '''\
import torch

print("torch", torch.__version__, "| CUDA", torch.version.cuda, "| GPU:",
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (switch the runtime to a T4 GPU)")
if tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]) < (2, 6):
    raise RuntimeError(f"this runtime's torch {torch.__version__} is older than 2.6, which transformers 5 needs: "
                       "pick a newer runtime, or pip install 'torch>=2.6' and restart the session")
Path("/tmp/keep-torch.txt").write_text(f"torch=={torch.__version__}\\n")
sh(sys.executable, "-m", "pip", "install", "-q", "-e", ".", "-c", "constraints/tested.txt", "-c", "/tmp/keep-torch.txt")
sys.path.insert(0, os.path.join(REPO, "code"))  # this kernel started before the install
'''

LOGIN_MD = """\
## 3. Log in to the Hugging Face hub
The token comes from the platform's secrets (`HF_TOKEN`). It is passed to the build through the environment and is
never printed; Tamrin's logs and the zip's secret scan keep it out of every file.
"""

LOGIN = '''\
def hf_token_from_secrets():
    if ON_COLAB:
        from google.colab import userdata
        return userdata.get("HF_TOKEN")
    if ON_KAGGLE:
        from kaggle_secrets import UserSecretsClient
        return UserSecretsClient().get_secret("HF_TOKEN")
    if os.environ.get("HF_TOKEN"):
        return os.environ["HF_TOKEN"]
    import getpass
    return getpass.getpass("Hugging Face token (input hidden): ")


try:
    _token = hf_token_from_secrets()
except Exception as e:  # the secret is missing or the notebook has no access to it
    raise RuntimeError(f"could not read the secret HF_TOKEN ({{type(e).__name__}}): add it as the first cell says") from None
if not _token:
    raise RuntimeError("the secret HF_TOKEN is empty: add your Hugging Face token as the first cell says")
os.environ["HF_TOKEN"] = _token  # build.py runs as a child process and reads it from the environment
from huggingface_hub import login, whoami

login(token=_token, add_to_git_credential=False)
print("logged in to the Hugging Face hub as", whoami(token=_token).get("name", "?"))
del _token

from tamrin.profiles import hub_access

ok, why = hub_access()  # huggingface_hub.auth_check: a license not accepted yet is caught here, not mid-download
print("access to google/paligemma-3b-pt-224:", why)
if not ok:
    raise RuntimeError(why + " — then run this cell again")
'''

STUDENT_MD = """\
## 4. Student details
The cover page and the zip's name use them (`HW1_<last name>_<student number>.zip`, as the assignment asks).
"""

STUDENT = '''\
import json

STUDENT = {{
{student_lines}
}}
missing = [k for k, v in STUDENT.items() if k != "first_name_en" and not v.strip()]
if missing:
    raise RuntimeError(f"fill in {{', '.join(missing)}} above, then run this cell again")
toml = "[student]\\n" + "".join(f"{{k}} = {{json.dumps(v, ensure_ascii=False)}}\\n" for k, v in STUDENT.items() if v)
Path("configs/student.toml").write_text(toml, encoding="utf-8")
print("wrote configs/student.toml")
'''

DOCTOR_MD = """\
## 5. Preflight: `build.py doctor`
Checks everything the long run needs — packages, GPU, token and license, the first dataset rows (raw and cleaned),
the processor on a real example, disk space — then times {steps} training steps of the real model on this GPU and
estimates each stage. The notebook stops here if a check fails; its table says what to do.
"""

DOCTOR = '''\
sh(sys.executable, "build.py", {doctor_args})
'''

RUN_MD = """\
## 6. Run everything
`python build.py all --profile paper`: data → fine-tuning → evaluation → memory budget → flow matching → report →
zip. Settings sized for a 16 GB T4: micro-batch {batch_size} × {grad_accum} accumulation steps (an effective batch of
{effective}); a T4 (compute capability 7.5) has no native bfloat16, so `train.compute_dtype = auto` computes in fp16
there, with fp32 LoRA weights and a gradient scaler; training stops cleanly and saves after {max_minutes:g} minutes
(`train.max_minutes`), leaving time for evaluation within the session limits. Run this cell again after a
disconnect (or *Run all*): it resumes.
"""

RUN = '''\
sh(sys.executable, "build.py", {args})
'''

LOSS_MD = """\
## 7. Results
### Training loss
"""

LOSS = '''\
from IPython.display import HTML, SVG, display
from tamrin.submit import show

RESULTS, FIGURES = Path(os.environ.get("TAMRIN_RESULTS_DIR") or "results"), Path("figures")
display(SVG(filename=str(show.loss_figure(FIGURES))))  # the report's own figure
'''

ROUGE_MD = """\
### ROUGE: base vs fine-tuned
F-scores on the test questions, with 95% bootstrap confidence intervals.
"""

ROUGE = '''\
display(HTML(show.table_html(show.rouge_rows(RESULTS))))
'''

SAMPLES_MD = """\
### The 10 test samples of the report
"""

SAMPLES = '''\
display(HTML(show.samples_html(RESULTS)))
'''

DOWNLOAD_MD = """\
## 8. Download the submission zip
The report (`report.pdf`) is at the top of it, with the code, the results, the figures and this notebook.
"""

DOWNLOAD = '''\
zips = sorted(glob.glob(os.path.join(REPO, "dist", "*.zip")), key=os.path.getmtime)
if not zips:
    raise RuntimeError("no zip in dist/: the output of the build cell says why")
print("zip:", zips[-1])
if ON_COLAB:
    from google.colab import files
    files.download(zips[-1])
elif ON_KAGGLE:
    from IPython.display import FileLink
    target = shutil.copy(zips[-1], "/kaggle/working/")
    print("also in the Output panel of the notebook:", target)
    display(FileLink(os.path.basename(target)))
'''


def _student_lines(values: dict[str, str]) -> str:
    return "\n".join(f"    {k!r}: {values.get(k, '')!r}," for k in STUDENT_KEYS)


def build_notebook(s: NotebookSettings) -> nbformat.NotebookNode:
    """The notebook, validated against the nbformat schema."""
    fmt = {"repo_url": s.repo_url, "model_page": MODEL_PAGE, "batch_size": s.batch_size, "profile": s.profile,
           "grad_accum": s.grad_accum, "effective": s.batch_size * s.grad_accum, "max_minutes": s.max_minutes,
           "student_lines": _student_lines(s.student), "args": ", ".join(repr(a) for a in s.build_args()),
           "doctor_args": ", ".join(repr(a) for a in s.doctor_args()), "steps": 3,
           "estimate_md": s.estimate_md or "_(no estimate: build the notebook with `python build.py notebook`)_"}
    cells = [
        new_markdown_cell(INTRO.format(**fmt)), new_code_cell(SETUP.format(**fmt)),
        new_markdown_cell(GET_CODE_MD), new_code_cell(GET_CODE),
        new_markdown_cell(INSTALL_MD), new_code_cell(INSTALL),
        new_markdown_cell(LOGIN_MD), new_code_cell(LOGIN.format(**fmt)),
        new_markdown_cell(STUDENT_MD), new_code_cell(STUDENT.format(**fmt)),
        new_markdown_cell(DOCTOR_MD.format(**fmt)), new_code_cell(DOCTOR.format(**fmt)),
        new_markdown_cell(RUN_MD.format(**fmt)), new_code_cell(RUN.format(**fmt)),
        new_markdown_cell(LOSS_MD), new_code_cell(LOSS),
        new_markdown_cell(ROUGE_MD), new_code_cell(ROUGE),
        new_markdown_cell(SAMPLES_MD), new_code_cell(SAMPLES),
        new_markdown_cell(DOWNLOAD_MD), new_code_cell(DOWNLOAD),
    ]
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python", "pygments_lexer": "python3"},
        # Open with a GPU runtime on either platform.
        "accelerator": "GPU",
        "colab": {"provenance": [], "gpuType": "T4", "toc_visible": True},
        "kaggle": {"accelerator": "nvidiaTeslaT4", "isGpuEnabled": True, "isInternetEnabled": True,
                   "language": "python", "sourceType": "notebook"},
    })
    # Stable cell ids keep the file identical from one build to the next.
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"tamrin-{i:02d}"
    nbformat.validate(nb)
    return nb
