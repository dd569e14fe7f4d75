"""The derive stage: every derivation record, its schema, and a failed or uncompilable record failing the stage
with one line naming it (no manifest left behind)."""
from __future__ import annotations

import json

import pytest

from tamrin.config import load_config
from tamrin.errors import TamrinError
from tamrin.flow import derive_stage
from tamrin.flow.derivations import Derivation
from tamrin.runner import Paths, run_stage

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixture in conftest.py

NAMES = ["thm2_gradients_agree", "thm2_monte_carlo", "thm3_conditional_field", "thm3_continuity", "thm3_ot_path",
         "thm3_ve_path", "thm3_vp_path", "thm3_ode_samples"]


def test_stage_writes_every_record_with_numbers_and_math_only(tmp_path):
    paths = Paths(tmp_path)
    out = run_stage("derive", load_config("demo", overrides=["derive.numeric_samples=1000"]), paths)
    assert out.status == "ran"
    recs = json.loads((paths.stage_dir("derive") / "derivations.json").read_text(encoding="utf-8"))
    assert [r["name"] for r in recs] == NAMES
    for r in recs:
        assert set(r) == {"name", "part", "check", "statement_typst", "steps_typst", "residual", "tolerance",
                          "passed", "assumptions", "numeric", "params"}
        assert r["passed"] and r["residual"] <= r["tolerance"] and r["part"] in ("2.1", "2.2")
        # No prose in a compute stage: the words are the templates' (no Persian letter anywhere in the record).
        assert not any("\u0600" <= ch <= "\u06ff" for ch in json.dumps(r, ensure_ascii=False)), r["name"]
    assert {r["check"] for r in recs} == {"sympy", "monte_carlo", "ode"}


def _failed_record() -> Derivation:
    return Derivation(name="thm_broken", part="2.2", check="sympy", statement_typst="a = b", steps_typst=["a = b"],
                      residual=1.0, tolerance=0.0, passed=False)


def test_a_failed_derivation_fails_the_stage_naming_it(tmp_path, monkeypatch):
    monkeypatch.setattr(derive_stage, "build", lambda n, log: [_failed_record()])
    paths = Paths(tmp_path)
    with pytest.raises(TamrinError, match="thm_broken"):
        run_stage("derive", load_config("demo"), paths)
    assert not (paths.stage_dir("derive") / "manifest.json").exists()


def test_typst_math_that_does_not_compile_fails_naming_the_record():
    rec = _failed_record()
    rec.passed, rec.residual, rec.steps_typst = True, 0.0, ["frac(a, b"]
    with pytest.raises(TamrinError, match="thm_broken"):
        derive_stage.check_derivations([rec])


def test_a_record_refuses_an_unknown_check_or_a_misplaced_assumption():
    with pytest.raises(ValueError, match="check"):
        Derivation(name="x", part="2.1", check="eyeballed", statement_typst="a", steps_typst=["a"], residual=0,
                   tolerance=0, passed=True)
    with pytest.raises(ValueError, match="step index"):
        Derivation(name="x", part="2.1", check="sympy", statement_typst="a", steps_typst=["a"], residual=0,
                   tolerance=0, passed=True, assumptions=[{"typst": "p > 0", "enters_at_step": 2}])
