"""Nothing private leaves the machine (issue 13): a planted token, home path, user or host name makes the zip
refuse naming file and line; every printed message and written error/log/manifest is redacted; and a demo zip
built in a project under a user's home holds none of those strings in any of its files."""
from __future__ import annotations

import json
import shutil
import socket
import zipfile
from pathlib import Path

import pytest

from tamrin import ROOT
from tamrin.cli import main
from tamrin.provenance import HF_TOKEN_PATTERN, Identity, find, redact
from tamrin.runner import Paths

TOKEN = "hf_" + "Xy7" * 11 + "q"  # built at run time: no file of the repository holds a token-shaped string
USER, HOST = "shirin", "shirin-thinkpad"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A user's home with a name and a machine that identify her; her token in the environment."""
    home = tmp_path / "home" / USER
    home.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    for var in ("USER", "LOGNAME", "LNAME", "USERNAME"):
        monkeypatch.setenv(var, USER)
    monkeypatch.setattr(socket, "gethostname", lambda: HOST)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return home


def test_token_pattern_finds_tokens_of_any_length_but_not_identifiers():
    for token in (TOKEN, "hf_" + "aB3" * 4, "hf_" + "a1" * 30):
        assert HF_TOKEN_PATTERN.search(f"x = '{token}'"), token
    for word in ("hf_token", "hf_hub_download", "HF_TOKEN", "hf_transfer", "use_hf_auth"):
        assert not HF_TOKEN_PATTERN.search(word), word


def test_redaction_replaces_token_paths_user_and_host(home):
    ident = Identity.current(home / "tamrin")
    text = f"{TOKEN} in {home}/tamrin/results and {home}/.cache by {USER} on {HOST}"
    out = redact(text, ident)
    assert out == "hf_*** in <project>/results and ~/.cache by <user> on <host>"
    assert find(out, ident) == []
    # generic accounts (root on Colab, Kaggle and CI) identify no one and would match ordinary words
    assert Identity(user="root", host="vm").names() == []


def _project(home: Path) -> Path:
    """A copy of this repository under the user's home, with the results fixture as its results/."""
    root = home / "tamrin"
    for rel in ("build.py", "README.md", "pyproject.toml", "Makefile"):
        shutil.copy2(ROOT / rel, root / rel) if root.exists() else (root.mkdir(), shutil.copy2(ROOT / rel, root / rel))
    for rel in ("code", "templates", "configs", "scripts", "bench"):
        shutil.copytree(ROOT / rel, root / rel, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info",
                                                                               ".ruff_cache", "student.toml"))
    shutil.copytree(ROOT / "tests" / "fixtures" / "results", root / "results")
    (root / "configs" / "student.toml").write_text(
        '[student]\nfirst_name_fa = "شیرین"\nlast_name_fa = "کاظمی"\nlast_name_en = "Kazemi"\n'
        'student_number = "810199999"\n', encoding="utf-8")
    return root


def _zip(root: Path, capsys) -> tuple[int, str]:
    code = main(["report-only", "--profile", "demo"], paths=Paths(root))
    assert code == 0, capsys.readouterr().err
    code = main(["zip", "--profile", "demo", "--allow-demo"], paths=Paths(root))
    return code, capsys.readouterr().err


@pytest.mark.slow
def test_a_demo_zip_built_under_a_home_holds_nothing_private(home, capsys):
    root = _project(home)
    code, err = _zip(root, capsys)
    assert code == 0, err
    (zpath,) = (root / "dist").glob("*.zip")
    private = [TOKEN, str(home), str(root), USER, HOST]
    from tamrin.submit import readable_text

    with zipfile.ZipFile(zpath) as zf:
        out = root / "unpacked"
        zf.extractall(out)
        names = zf.namelist()
    assert "report.pdf" in names and any(n.endswith("manifest.json") for n in names)
    for name in names:
        text = readable_text(out / name)
        for s in private:
            assert s not in text, (name, s)


@pytest.mark.slow
@pytest.mark.parametrize("plant", ["token_in_results", "token_in_config_comment", "home_in_manifest",
                                   "host_in_results"])
def test_a_planted_private_string_refuses_the_zip_naming_file_and_line(home, capsys, plant):
    root = _project(home)
    assert main(["report-only", "--profile", "demo"], paths=Paths(root)) == 0
    if plant == "token_in_results":
        rel, line = "results/eval/base/predictions.jsonl", f'{{"note": "{TOKEN}"}}'
    elif plant == "token_in_config_comment":
        rel, line = "configs/paper.toml", f"# my token: {TOKEN}"
    elif plant == "home_in_manifest":
        rel, line = "results/memory/manifest.json", None
        m = json.loads((root / rel).read_text(encoding="utf-8"))
        m["sources"] = [f"{home}/tamrin/configs/demo.toml"]
        (root / rel).write_text(json.dumps(m, indent=2), encoding="utf-8")
    else:
        rel, line = "results/flow/experiment.json", None
        (root / rel).write_text((root / rel).read_text(encoding="utf-8") + f"\n{HOST}\n", encoding="utf-8")
    if line is not None:
        with open(root / rel, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    lines = (root / rel).read_text(encoding="utf-8").splitlines()
    where = next(i for i, text in enumerate(lines, 1) if TOKEN in text or str(home) in text or HOST in text)
    code = main(["zip", "--profile", "demo", "--allow-demo"], paths=Paths(root))
    err = capsys.readouterr().err
    assert code == 2 and f"{rel}:{where}:" in err, err
    assert TOKEN not in err and str(home) not in err and HOST not in err
    assert not list((root / "dist").glob("*.zip"))


def test_an_exception_message_is_redacted_on_screen_and_in_last_error(home, tmp_path, capsys, monkeypatch):
    from tamrin import cli

    def boom(*args, **kwargs):
        raise RuntimeError(f"could not read {home}/secret.json with {TOKEN}")

    monkeypatch.setattr(cli, "dispatch", boom)
    root = tmp_path / "project"
    root.mkdir()
    assert main(["status", "--profile", "demo"], paths=Paths(root)) == 1
    err = capsys.readouterr().err
    trace = (root / "results" / "last-error.txt").read_text(encoding="utf-8")
    for text in (err, trace):
        assert TOKEN not in text and str(home) not in text and "hf_***" in text and "~/secret.json" in text
    assert "results/last-error.txt" in err


def test_a_tamrin_error_naming_a_path_under_home_is_redacted(home, capsys):
    cfg = home / "my-config.toml"
    code = main(["status", "--profile", "demo", "--config", str(cfg)], paths=Paths(ROOT))
    err = capsys.readouterr().err
    assert code == 2 and "~/my-config.toml" in err and str(home) not in err


def test_log_lines_are_redacted(home, tmp_path):
    import logging

    from tamrin.log import log_to_file, stage_logger

    path = tmp_path / "log.txt"
    with log_to_file("privacy-test", path):
        stage_logger("privacy-test").warning(f"token {TOKEN} at {home}/x for {USER}@{HOST}")
    text = path.read_text(encoding="utf-8")
    assert TOKEN not in text and str(home) not in text and USER not in text and HOST not in text
    assert logging.getLogger("tamrin.privacy-test")
