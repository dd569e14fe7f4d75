"""Numeric companions of the symbolic derivations (float64, seeded, CPU).

`check_gradients` (Theorem 2): Monte-Carlo ∇θ L_FM (exact marginal field of a 2-D Gaussian mixture on Lipman's OT
path) and ∇θ L_CFM of a small random MLP from the same samples; their paired batch differences must have mean 0
(per-parameter t-tests, Bonferroni) and L_CFM − L_FM must equal the expected conditional variance, while a wrong
marginal field must be rejected (the test has power). `check_paths` (Theorem 3): integrate the lambdified sympy
field of the OT, VE and VP paths and compare with ψ_t(x0) pointwise and with fresh p_t(x|x1) samples (KS tests).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import sympy as sp
import torch
from scipy import stats
from scipy.integrate import solve_ivp

from . import derivations as th3
from .derivations import Derivation, Step
from ..contract.persian import typst_number as number

# --- Theorem 2: Monte-Carlo gradients --------------------------------------------------------------------------

MIX_MEANS = np.array([[-2.0, -2.0], [-2.0, 2.0], [2.0, -2.0], [2.0, 2.0]])
MIX_WEIGHTS = np.array([0.1, 0.2, 0.3, 0.4])
MIX_STD = 0.3
SIGMA_MIN = 0.1
ALPHA = 0.01  # family-wise level of every test here (Bonferroni-corrected)


def _mlp(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32), torch.nn.Tanh(),
                               torch.nn.Linear(32, 2)).double()


def sample_mixture_path(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """(t, x1, x) with x1 ~ q (Gaussian mixture), x = σ_t x0 + t x1 on Lipman's OT path."""
    t = rng.uniform(0.0, 1.0, size=(n, 1))
    k = rng.choice(len(MIX_WEIGHTS), size=n, p=MIX_WEIGHTS)
    x1 = MIX_MEANS[k] + MIX_STD * rng.standard_normal((n, 2))
    x0 = rng.standard_normal((n, 2))
    sig = 1.0 - (1.0 - SIGMA_MIN) * t
    return {"t": t, "x1": x1, "x": sig * x0 + t * x1, "sigma": sig}


def conditional_field(x: np.ndarray, x1: np.ndarray, t: np.ndarray) -> np.ndarray:
    """u_t(x|x1) = (x1 − (1 − σ_min) x) / (1 − (1 − σ_min) t) (eq. 21)."""
    return (x1 - (1.0 - SIGMA_MIN) * x) / (1.0 - (1.0 - SIGMA_MIN) * t)


def marginal_field(x: np.ndarray, t: np.ndarray, weights: np.ndarray = MIX_WEIGHTS) -> tuple[np.ndarray, np.ndarray]:
    """Exact u_t(x) = E[u_t(x|x1) | x] and the conditional variance tr Var[u_t(x|x1) | x] for the mixture target.

    Given component k, (x1, x) is jointly Gaussian: x | k ~ N(t m_k, v I) with v = σ_t² + t² s², and
    E[x1 | x, k] = m_k + (t s² / v)(x − t m_k), Var[x1 | x, k] = s² σ_t² / v per coordinate.
    """
    sig = 1.0 - (1.0 - SIGMA_MIN) * t
    var = sig ** 2 + t ** 2 * MIX_STD ** 2  # (n, 1)
    diff = x[:, None, :] - t[:, None, :] * MIX_MEANS[None]  # (n, K, 2)
    logits = np.log(weights)[None] - (diff ** 2).sum(-1) / (2 * var)
    post = np.exp(logits - logits.max(1, keepdims=True))
    post /= post.sum(1, keepdims=True)  # r_k(x)
    ex1 = MIX_MEANS[None] + (t * MIX_STD ** 2 / var)[:, None, :] * diff
    u_k = (ex1 - (1.0 - SIGMA_MIN) * x[:, None, :]) / sig[:, None, :]
    u = (post[..., None] * u_k).sum(1)
    within = 2 * MIX_STD ** 2 / var[:, 0]  # tr Var[u | x, k] = d s² / v
    between = (post * ((u_k - u[:, None, :]) ** 2).sum(-1)).sum(1)
    return u, within + between


def gradient_statistics(n: int, seed: int, batches: int = 100, wrong_posterior: bool = False) -> dict[str, Any]:
    """Paired per-batch gradient differences and the loss gap versus the variance term."""
    rng = np.random.default_rng(seed)
    model = _mlp(seed)
    size = max(n // batches, 2)
    weights = np.full_like(MIX_WEIGHTS, 1.0 / len(MIX_WEIGHTS)) if wrong_posterior else MIX_WEIGHTS
    g_fm, g_cfm, gap, var, loss_fm, loss_cfm = [], [], [], [], [], []
    params = list(model.parameters())
    for _ in range(batches):  # autograd gradients of both losses on the same samples, batch by batch
        b = sample_mixture_path(size, rng)
        u, v_term = marginal_field(b["x"], b["t"], weights)
        v = model(torch.from_numpy(np.concatenate([b["x"], b["t"]], 1)))
        fm = ((v - torch.from_numpy(u)) ** 2).sum(1)
        cfm = ((v - torch.from_numpy(conditional_field(b["x"], b["x1"], b["t"]))) ** 2).sum(1)
        g_fm.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(fm.mean(), params, retain_graph=True)]))
        g_cfm.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(cfm.mean(), params)]))
        fm, cfm = fm.detach().numpy(), cfm.detach().numpy()
        gap.append(float((cfm - fm).mean()))
        loss_fm.append(float(fm.mean()))
        loss_cfm.append(float(cfm.mean()))
        var.append(float(v_term.mean()))
    g_fm, g_cfm = torch.stack(g_fm).numpy(), torch.stack(g_cfm).numpy()
    d = g_fm - g_cfm
    se = d.std(0, ddof=1) / math.sqrt(batches)
    z = d.mean(0) / np.maximum(se, 1e-300)
    P = d.shape[1]
    z_crit = float(stats.t.ppf(1 - ALPHA / (2 * P), batches - 1))  # Bonferroni, family-wise α
    gap_minus_var = np.array(gap) - np.array(var)
    gap_z = float(gap_minus_var.mean() / (gap_minus_var.std(ddof=1) / math.sqrt(batches)))
    gap_crit = float(stats.t.ppf(1 - ALPHA / 2, batches - 1))
    mean_fm, mean_cfm = g_fm.mean(0), g_cfm.mean(0)
    se_fm, se_cfm = (g.std(0, ddof=1) / math.sqrt(batches) for g in (g_fm, g_cfm))
    top = np.argsort(-np.abs(mean_fm))[:5]
    return {
        "samples": size * batches, "batches": batches, "parameters": P,
        "max_abs_z": float(np.abs(z).max()), "z_crit": z_crit,
        "fraction_abs_z_over_1.96": float((np.abs(z) > 1.96).mean()),
        "grad_norm_fm": float(np.linalg.norm(mean_fm)), "grad_norm_cfm": float(np.linalg.norm(mean_cfm)),
        "relative_difference": float(np.linalg.norm(mean_fm - mean_cfm) / np.linalg.norm(mean_fm)),
        "mean_se_fm": float(se_fm.mean()), "mean_se_cfm": float(se_cfm.mean()),
        "largest_components": [
            {"index": int(i), "fm": float(mean_fm[i]), "fm_ci95": float(1.96 * se_fm[i]),
             "cfm": float(mean_cfm[i]), "cfm_ci95": float(1.96 * se_cfm[i])} for i in top],
        "loss_fm": float(np.mean(loss_fm)), "loss_cfm": float(np.mean(loss_cfm)),
        "loss_gap": float(np.mean(gap)), "variance_term": float(np.mean(var)),
        "gap_minus_variance_z": gap_z, "gap_z_crit": gap_crit,
    }


def check_gradients(n: int, seed: int = 0) -> Derivation:
    st = gradient_statistics(n, seed)
    control = gradient_statistics(n, seed, wrong_posterior=True)
    grads_ok = st["max_abs_z"] <= st["z_crit"]
    gap_ok = abs(st["gap_minus_variance_z"]) <= st["gap_z_crit"]
    power_ok = control["max_abs_z"] > control["z_crit"]
    numeric = {**st, "negative_control": {
        # the control: u_t(x) computed with uniform instead of the true component weights (a wrong marginal field)
        "max_abs_z": control["max_abs_z"], "z_crit": control["z_crit"], "rejected": power_ok},
        "alpha": ALPHA, "target": {"means": MIX_MEANS.tolist(), "weights": MIX_WEIGHTS.tolist(), "std": MIX_STD},
        "path": {"sigma_min": SIGMA_MIN},  # Lipman's OT path (eq. 20); v_θ: MLP 3→32→32→2, tanh, float64
        "checks": {"gradients_equal": grads_ok, "gap_equals_variance": gap_ok, "test_has_power": power_ok}}
    steps = [
        Step('q(x_1) = sum_(k=1)^4 w_k cal(N)(x_1 | m_k, s^2 I) , quad x = sigma_t x_0 + t x_1 , quad '
             'sigma_t = 1 - (1 - sigma_"min") t',
             f"a 2-D Gaussian-mixture target (s = {MIX_STD}, weights {MIX_WEIGHTS.tolist()}), OT path with "
             f"σ_min = {SIGMA_MIN}, {st['samples']} samples in {st['batches']} batches"),
        Step('u_t (x) = sum_k r_k (x) frac(bb(E)[x_1 | x, k] - (1 - sigma_"min") x, sigma_t) , quad '
             'bb(E)[x_1 | x, k] = m_k + frac(t s^2, sigma_t^2 + t^2 s^2) (x - t m_k)',
             "the exact marginal field: (x1, x) is jointly Gaussian given the component"),
        Step('hat(g)_"FM" - hat(g)_"CFM" = frac(1, B) sum_b (nabla_theta hat(cal(L))_"FM"^((b)) - '
             'nabla_theta hat(cal(L))_"CFM"^((b)))',
             f"autograd gradients per batch on the same samples; per-parameter t-statistics: max |z| = "
             f"{st['max_abs_z']:.2f} ≤ {st['z_crit']:.2f} (Bonferroni over {st['parameters']} parameters, α = 0.01); "
             f"‖ĝ_FM − ĝ_CFM‖ / ‖ĝ_FM‖ = {st['relative_difference']:.3f}"),
        Step('hat(cal(L))_"CFM" - hat(cal(L))_"FM" approx bb(E)_(t, x) "tr" "Var"[u_t (x | x_1) | x]',
             f"loss gap {st['loss_gap']:.4f} vs variance term {st['variance_term']:.4f} "
             f"(paired z = {st['gap_minus_variance_z']:.2f}, |z| ≤ {st['gap_z_crit']:.2f})"),
        Step('tilde(u)_t (x) = u_t (x) |_(w_k = 1 \\/ 4) ==> max_j abs(z_j) = ' + f"{control['max_abs_z']:.1f}",
             "a wrong marginal field is rejected by the same test, so the test can detect a real difference"),
    ]
    # Checked: Monte Carlo + torch autograd (float64); residual = max per-parameter |t| of the paired gradient
    # difference, tolerance = its Bonferroni critical value; also the loss-gap test and a negative control.
    return Derivation(
        name="thm2_monte_carlo", part="2.1", check="monte_carlo",
        statement_typst='bb(E)[hat(g)_"FM"] = bb(E)[hat(g)_"CFM"] , quad '
                        'cal(L)_"CFM" - cal(L)_"FM" = bb(E)_(t, x) "tr" "Var"[u_t (x | x_1) | x]',
        steps_typst=[s.typst for s in steps], residual=st["max_abs_z"], tolerance=st["z_crit"],
        passed=bool(grads_ok and gap_ok and power_ok), numeric=numeric)


# --- Theorem 3: integrate the ODE -------------------------------------------------------------------------

X1 = np.array([1.5, -0.5])
# Concrete schedules: Song et al.'s linear VP schedule β(s) = 0.1 → 20 (integrated to t = 0.999, where σ_t > 0),
# a geometric VE schedule σ_s = 0.01·500^s, and the OT path with σ_min = 0.05.
SCHEDULES = {"ot_sigma_min": 0.05, "ve_sigma_min": 0.01, "ve_sigma_max": 5.0, "vp_beta0": 0.1, "vp_beta1": 20.0,
             "vp_t_end": 0.999}


def concrete_paths() -> dict[str, dict[str, Any]]:
    """μ_t, σ_t with concrete schedules (sympy, in t and x1), their Theorem-3 field, and the time interval."""
    s, beta0, beta1 = th3.s, SCHEDULES["vp_beta0"], SCHEDULES["vp_beta1"]
    smin_ve, smax_ve = SCHEDULES["ve_sigma_min"], SCHEDULES["ve_sigma_max"]
    schedule = {"ot": {th3.sigma_min: SCHEDULES["ot_sigma_min"]},
                "ve": {th3.sigma: sp.Lambda(s, smin_ve * (smax_ve / smin_ve) ** s)},
                "vp": {th3.alpha: sp.Lambda(s, sp.exp(-(beta0 * s + (beta1 - beta0) * s ** 2 / 2) / 2))}}
    out = {}
    for path in th3.special_paths():
        mu_t, sig_t = (e.subs(schedule[path.name]).doit() for e in (path.mu_t, path.sigma_t))
        out[path.name] = {"mu": mu_t, "sigma": sig_t, "field": th3.theorem3_field(mu_t, sig_t),
                          "t_end": SCHEDULES["vp_t_end"] if path.name == "vp" else 1.0}
    return out


def check_paths(n: int, seed: int = 0) -> Derivation:
    rng = np.random.default_rng(seed)
    per_path: dict[str, Any] = {}
    worst_err, min_p = 0.0, 1.0
    n_tests = 0
    for name, p in concrete_paths().items():
        mu = sp.lambdify((th3.t, th3.x1), p["mu"], modules="numpy")
        sig = sp.lambdify((th3.t,), p["sigma"], modules="numpy")
        u = sp.lambdify((th3.t, th3.x, th3.x1), p["field"], modules="numpy")
        t_end = p["t_end"]
        times = [0.25 * t_end, 0.5 * t_end, 0.75 * t_end, t_end]
        x0 = mu(0.0, X1) + sig(0.0) * rng.standard_normal((n, 2))  # samples of p_0(x|x1)
        z0 = (x0 - mu(0.0, X1)) / sig(0.0)  # the noise behind them: ψ_t(x0) = σ_t z0 + μ_t

        def rhs(tt: float, flat: np.ndarray) -> np.ndarray:
            return u(tt, flat.reshape(-1, 2), X1).reshape(-1)

        sol = solve_ivp(rhs, (0.0, t_end), x0.reshape(-1), method="DOP853", t_eval=times, rtol=1e-10, atol=1e-10)
        rows = []
        for j, tt in enumerate(times):
            xt = sol.y[:, j].reshape(-1, 2)
            exact = sig(tt) * z0 + mu(tt, X1)
            err = float(np.abs(xt - exact).max() / (1.0 + np.abs(exact).max()))
            fresh = mu(tt, X1) + sig(tt) * rng.standard_normal((n, 2))  # independent samples of p_t(x|x1)
            pvals = [float(stats.ks_2samp(xt[:, i], fresh[:, i]).pvalue) for i in range(2)]
            n_tests += 2
            worst_err, min_p = max(worst_err, err), min(min_p, *pvals)
            rows.append({"t": tt, "max_rel_error_vs_psi": err, "ks_pvalues": pvals,
                         "ode_mean": xt.mean(0).tolist(), "ode_std": xt.std(0).tolist(),
                         "path_mean": np.broadcast_to(mu(tt, X1), (2,)).tolist(), "path_std": float(sig(tt))})
        per_path[name] = {"t_end": t_end, "times": rows, "rtol": 1e-10,  # scipy DOP853, rtol = atol
                          "nfev": int(sol.nfev)}
    p_crit = ALPHA / n_tests  # Bonferroni, family-wise α
    tol = 1e-6
    passed = worst_err <= tol and min_p > p_crit
    steps = [
        Step("x(0) ~ p_0 (x | x_1) , quad frac(dif x, dif t) = u_t (x | x_1) = "
             "frac(sigma'_t (x_1), sigma_t (x_1)) (x - mu_t (x_1)) + mu'_t (x_1)",
             f"{n} samples, x1 = {X1.tolist()}; the field is the sympy Theorem-3 expression, lambdified, for the OT "
             "(σ_min = 0.05), VE (σ_s = 0.01·500^s) and VP (β linear 0.1 → 20, integrated to t = 0.999) paths"),
        Step("max_i norm(x_i (t) - psi_t (x_i (0))) \\/ (1 + max norm(psi_t)) = " + number(worst_err),
             f"pathwise agreement with the flow of eq. 11 at t = ¼, ½, ¾, 1 of each interval (tolerance {tol:g})"),
        Step("x(t) ~ cal(N)(mu_t (x_1), sigma_t (x_1)^2 I) : quad min p_\"KS\" = " + number(min_p),
             f"two-sample KS tests against fresh samples of p_t(x|x1), per coordinate and time ({n_tests} tests; "
             f"reject below {p_crit:.1e}, Bonferroni α = 0.01)"),
    ]
    # Checked: scipy solve_ivp (DOP853) of the lambdified sympy field; pathwise error vs ψ_t and two-sample KS
    # tests vs fresh p_t(x|x1) samples.
    return Derivation(
        name="thm3_ode_samples", part="2.2", check="ode",
        statement_typst="x(0) ~ p_0 (x | x_1) ==> x(t) ~ p_t (x | x_1) = cal(N)(mu_t (x_1), sigma_t (x_1)^2 I)",
        steps_typst=[s.typst for s in steps], residual=worst_err, tolerance=tol, passed=bool(passed),
        numeric={"samples": n, "x1": X1.tolist(), "alpha": ALPHA, "schedules": SCHEDULES, "paths": per_path,
                 "min_ks_pvalue": min_p, "ks_tests": n_tests, "ks_p_crit": p_crit})
