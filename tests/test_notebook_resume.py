"""The Colab/Kaggle notebook, executed offline on this machine: results kept in a stand-in for Google Drive
(a temp folder named by TAMRIN_RESULTS_DIR, as the notebook's setup cell does on Colab), a fine-tuning run
killed after its first checkpoint, then the notebook run from the top: it resumes, runs doctor, and ends with
the report and the zip.

The notebook's code cells run in order in one Python process (as a kernel would), except the install cell (this
environment is installed already) and the hub-login cell (the offline demo needs no hub); IPython's display
functions are a recording stand-in, since no notebook front end is attached."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUDENT = {"first_name_fa": "سارا", "last_name_fa": "احمدی", "first_name_en": "Sara", "last_name_en": "Ahmadi",
           "student_number": "810100000"}
# A small demo run: 40 fine-tuning steps with a checkpoint every 2, a short flow experiment.
SMALL = ("data.n_scenes=40", "data.questions_per_scene=4", "data.max_test=20", "train.max_steps=40",
         "train.save_every=2", "eval.bootstrap=50", "flow.steps=200", "flow.n_eval=200", "flow.n_plot=100", "flow.n_traj=20",
         "derive.numeric_samples=2000")
IPYTHON_STANDIN = '''\
SHOWN = []
class HTML:
    def __init__(self, data): self.data = data
class Markdown:
    def __init__(self, data): self.data = data
class Image:
    def __init__(self, filename=None, **kw): self.filename = filename
class SVG:
    def __init__(self, filename=None, **kw):
        self.filename = filename
        assert open(filename).read().lstrip().startswith(("<?xml", "<svg")), filename
class FileLink:
    def __init__(self, path): self.path = path
def display(*objs):
    SHOWN.extend(objs)
    print("[display]", *(type(o).__name__ for o in objs))
'''


def checkout_copy(dest: Path) -> None:
    """The files a clone would have (tracked and new, not ignored), without results or build outputs."""
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def notebook_script(values: dict) -> str:
    """The notebook's code cells with its parameters set, less the cells tagged install and hub-login."""
    from tamrin.submit import build_notebook

    cells = [c for c in build_notebook(values).cells if c.cell_type == "code"]
    kept = [c.source for c in cells if not {"install", "hub-login"} & set(c.metadata.get("tags", []))]
    assert len(kept) == len(cells) - 2
    return "\n\n".join(kept) + "\n"


def config_args(values: dict) -> list[str]:
    """What the notebook's setup cell computes as CONFIG_ARGS from the same parameters."""
    sets = [f"train.batch_size={values['BATCH_SIZE']}", f"train.grad_accum={values['GRAD_ACCUM']}",
            f"train.max_minutes={values['MAX_MINUTES']:g}", *values["EXTRA_SETS"]]
    return ["--profile", values["PROFILE"], *[a for v in sets for a in ("--set", v)]]


@pytest.mark.slow
def test_notebook_resumes_a_killed_run_and_ends_with_the_report(tmp_path):
    work, drive = tmp_path / "work", tmp_path / "drive" / "MyDrive" / "tamrin" / "results"
    repo = work / "tamrin"
    checkout_copy(repo)
    standin = tmp_path / "ipython"
    (standin / "IPython").mkdir(parents=True)
    (standin / "IPython" / "__init__.py").write_text("version_info = (8, 30, 0)\n\n\ndef get_ipython():\n    return None\n")
    (standin / "IPython" / "display.py").write_text(IPYTHON_STANDIN)
    env = {**os.environ, "TAMRIN_RESULTS_DIR": str(drive), "TQDM_DISABLE": "1", "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join([str(repo / "code"), str(standin)])}
    values = {"REPO_URL": "", "PROFILE": "demo", "BATCH_SIZE": 8, "GRAD_ACCUM": 1, "MAX_MINUTES": 60.0,
              "EXTRA_SETS": list(SMALL), "STUDENT": STUDENT, "T4_ESTIMATE_MD": ""}

    # 1. the first session: fine-tuning killed (SIGKILL, like a lost runtime) once a checkpoint is complete
    first = subprocess.Popen([sys.executable, "build.py", "finetune", *config_args(values)], cwd=repo, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while not list(drive.glob(".work/finetune/*/ckpt-*/complete.json")):
            assert first.poll() is None, "finetune ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.05)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)  # the group this test started (build.py and any worker)
        first.wait()
    assert not (drive / "finetune" / "manifest.json").exists()  # no result claimed for the killed run
    assert not (repo / "results").exists()  # everything went to the Drive stand-in

    # 2. the notebook from the top, as after a reconnect
    script = tmp_path / "notebook.py"
    script.write_text(notebook_script(values), encoding="utf-8")
    res = subprocess.run([sys.executable, str(script)], cwd=work, env=env, capture_output=True, text=True, timeout=900)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "results are kept in" in out and "doctor: the run can start" in out
    assert "resuming from step" in (drive / "finetune" / "log.txt").read_text(encoding="utf-8")
    steps = [json.loads(l)["step"] for l in (drive / "finetune" / "loss.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 41))  # contiguous across the kill
    summary = json.loads((drive / "finetune" / "summary.json").read_text())
    assert summary["resumed_from_step"] and summary["steps_done"] == 40
    assert (repo / "report" / "report.pdf").stat().st_size > 10_000
    assert list((repo / "dist").glob("*.zip")) and out.count("[display]") >= 3  # loss curve, ROUGE table, samples
    assert not (repo / "results").exists()
