"""Re-check the residuals of the flow-matching derivations, and that the checks can fail."""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from tamrin.flow import derivations, numeric_checks
from tamrin.flow.derivations import symbolic_residual, theorem2, thm2_residuals
from tamrin.flow.typst_math import compile_check

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixture in conftest.py


def test_theorem2_identities_hold_for_generic_mixtures():
    for K, d in [(2, 1), (3, 2)]:
        for name, expr in thm2_residuals(K, d).items():
            assert symbolic_residual(expr) == 0.0, (K, d, name)


def test_theorem2_identities_hold_for_gaussian_paths():
    for name, expr in thm2_residuals(2, 1, gaussian=True).items():
        assert symbolic_residual(expr) == 0.0, name


def test_theorem2_check_detects_a_wrong_marginal_field():
    # The unweighted average of the conditional fields is not the marginal field: the gradients then differ.
    theta, w, p, u, v = derivations._thm2_mixture(2, 1)
    P = sum(wk * pk for wk, pk in zip(w, p))
    wrong_u = (u[0][0] + u[1][0]) / 2
    fm = P * (v[0] - wrong_u) ** 2
    cfm = sum(w[k] * p[k] * (v[0] - u[k][0]) ** 2 for k in range(2))
    assert symbolic_residual(sp.diff(fm, theta) - sp.diff(cfm, theta)) == 1.0


def test_theorem2_record():
    (rec,) = theorem2(K=2, d=1)
    assert rec.passed and rec.residual == 0.0
    assert [a["enters_at_step"] for a in rec.assumptions] == [2, 7, 7]
    assert all(1 <= a["enters_at_step"] <= len(rec.steps_typst) for a in rec.assumptions)
    compile_check([rec.statement_typst, *rec.steps_typst, *[a["typst"] for a in rec.assumptions]])


def test_theorem3_records_pass_and_compile():
    records = derivations.theorem3()
    assert [r.name for r in records] == ["thm3_conditional_field", "thm3_continuity", "thm3_ot_path",
                                         "thm3_ve_path", "thm3_vp_path"]
    for r in records:
        assert r.passed and r.residual == 0.0, r.name
        assert len(r.steps_typst) >= 3
        compile_check([r.statement_typst, *r.steps_typst])


def test_continuity_equation_residuals():
    for d in (1, 2):
        assert symbolic_residual(derivations.continuity_residual(d)) == 0.0, d
    dt_log, div = derivations.general_d_terms()
    assert sp.simplify(dt_log + div) == 0


def test_continuity_check_detects_a_wrong_field():
    t, x = derivations.t, derivations.x
    sig, m = derivations.sigma(t), derivations.mu(t)
    p = sp.exp(-(x - m) ** 2 / (2 * sig ** 2)) / sp.sqrt(2 * sp.pi * sig ** 2)
    wrong = sp.diff(sig, t) / sig * (x - m)  # μ'_t dropped
    assert symbolic_residual((sp.diff(p, t) + sp.diff(p * wrong, x)) / p) == 1.0


def test_special_cases_match_the_paper_and_a_wrong_sign_is_caught():
    for path in derivations.special_paths():
        u = derivations.theorem3_field(path.mu_t, path.sigma_t)
        assert symbolic_residual(u - path.paper_u) == 0.0, path.name
        assert symbolic_residual(u + path.paper_u) == 1.0, path.name  # the opposite sign is not accepted


def test_numeric_gradient_check_passes_and_has_power():
    rec = numeric_checks.check_gradients(4000, seed=1)
    assert rec.passed, rec.numeric
    assert rec.residual <= rec.tolerance
    assert rec.numeric["negative_control"]["rejected"]
    assert abs(rec.numeric["loss_gap"] - rec.numeric["variance_term"]) < 0.1 * rec.numeric["variance_term"]


def test_marginal_field_is_the_conditional_expectation():
    # Monte Carlo at one (x, t): E[u_t(x|x1) | x] by importance weights over x1 ~ q equals the closed form.
    rng = np.random.default_rng(0)
    t = np.array([[0.6]])
    x = np.array([[1.0, 1.5]])
    k = rng.choice(4, size=400000, p=numeric_checks.MIX_WEIGHTS)
    x1 = numeric_checks.MIX_MEANS[k] + numeric_checks.MIX_STD * rng.standard_normal((400000, 2))
    sig = 1 - (1 - numeric_checks.SIGMA_MIN) * t[0, 0]
    logw = -((x - t[0, 0] * x1) ** 2).sum(1) / (2 * sig ** 2)  # p_t(x | x1) up to a constant
    w = np.exp(logw - logw.max())
    u_c = numeric_checks.conditional_field(np.repeat(x, len(x1), 0), x1, np.repeat(t, len(x1), 0))
    mc = (w[:, None] * u_c).sum(0) / w.sum()
    exact, _ = numeric_checks.marginal_field(x, t)
    assert np.allclose(mc, exact[0], atol=0.05), (mc, exact)


def test_numeric_ode_check_passes():
    rec = numeric_checks.check_paths(600, seed=2)
    assert rec.passed, rec.numeric
    assert rec.residual < 1e-6
    assert set(rec.numeric["paths"]) == {"ot", "ve", "vp"}
