"""Part 2.1 — Theorem 2 of Lipman et al. (2023): ∇θ L_FM(θ) = ∇θ L_CFM(θ), checked with sympy.

The target is a K-component mixture q(x1) = Σ_k w_k δ(x1 − c_k) (so p_1 = Σ_k w_k N(c_k, σ_1² I) is a Gaussian
mixture), the conditional paths are Gaussian, p_k := p_t(x|c_k) = N(x | μ_t(c_k), σ_t(c_k)² I), with the
conditional fields u_k := u_t(x|c_k) of Theorem 3, the marginal field is u_t(x) = Σ_k w_k p_k u_k / p_t(x)
(eq. 8 of the paper), and v = v_θ(x) is a generic function of θ. At every (x, t):

  g_FM  = ∇θ [p_t(x) ‖v − u_t(x)‖²]          (the FM integrand, eq. 5, times its density)
  g_CFM = ∇θ Σ_k w_k p_k ‖v − u_k‖²           (the CFM integrand, eq. 9, times its density)

and g_FM − g_CFM simplifies to 0; the loss integrands differ by Σ_k w_k p_k ‖u_k − u_t(x)‖², which has no θ
in it.
"""
from __future__ import annotations

import sympy as sp

from .records import Derivation, Step, symbolic_residual
from .typst_math import typst

# The condition (p_t(x) > 0 everywhere) is assumption 1 of the record, printed beside the statement.
STATEMENT = 'nabla_theta cal(L)_"FM" (theta) = nabla_theta cal(L)_"CFM" (theta)'

ASSUMPTIONS = [
    # "the marginal density is positive, so the marginal field u_t(x) = ∫ u_t(x|x1) p_t(x|x1) q(x1) dx1 / p_t(x) (eq. 8) is defined at every x; Gaussian conditional paths with σ_t > 0 satisfy it"
    {"typst": "p_t (x) > 0 quad forall x in RR^d, t in [0, 1]", "enters_at_step": 2},
    # "integrability (q decays fast enough): Fubini lets the x- and x1-integrals swap, so E_{p_t(x)}⟨v, u_t(x)⟩ = E_{q(x1), p_t(x|x1)}⟨v, u_t(x|x1)⟩ (for a finite mixture the x1-integral is a finite sum and this is automatic)"
    {"typst": "integral integral norm(v_t (x))^2 p_t (x | x_1) q(x_1) dif x_1 dif x < infinity", "enters_at_step": 7},
    # "u_t, v_t and ∇θ v_t bounded: with the integrability above, dominated convergence lets ∇θ pass inside ∫ dx and E_t, so the pointwise identity of step 6 integrates to the gradient identity"
    {"typst": "norm(u_t), norm(v_t), norm(nabla_theta v_t) < C", "enters_at_step": 7},
]


def _mixture(K: int, d: int):
    """Symbols of a K-component, d-dimensional mixture at one fixed (x, t), and a generic v_θ."""
    theta = sp.Symbol("theta")
    w = sp.symbols(f"w_1:{K + 1}", positive=True)
    p = sp.symbols(f"p_1:{K + 1}", positive=True)
    u = [[sp.Symbol(f"u_{k + 1}" if d == 1 else f"u_{k + 1}{i + 1}") for i in range(d)] for k in range(K)]
    v = [sp.Function(f"v{i + 1}")(theta) for i in range(d)]
    return theta, w, p, u, v


def integrands(K: int, d: int, gaussian: bool = False):
    """(theta, fm, cfm, variance): the FM and CFM loss integrands at one (x, t), times their densities.

    With `gaussian=True`, p_k and u_k are the Gaussian densities and Theorem-3 fields of generic paths
    μ_t(c_k), σ_t(c_k) (time derivatives as free symbols), so the identity is shown for the actual paths.
    """
    theta, w, p, u, v = _mixture(K, d)
    if gaussian:
        x = sp.symbols(f"x1:{d + 1}", real=True)
        subs = {}
        for k in range(K):
            sig, dsig = sp.Symbol(f"s_{k + 1}", positive=True), sp.Symbol(f"ds_{k + 1}", real=True)
            mu = [sp.Symbol(f"m_{k + 1}{i + 1}", real=True) for i in range(d)]
            dmu = [sp.Symbol(f"dm_{k + 1}{i + 1}", real=True) for i in range(d)]
            r2 = sum((x[i] - mu[i]) ** 2 for i in range(d))
            subs[p[k]] = sp.exp(-r2 / (2 * sig ** 2)) / (2 * sp.pi * sig ** 2) ** sp.Rational(d, 2)
            for i in range(d):
                subs[u[k][i]] = dsig / sig * (x[i] - mu[i]) + dmu[i]
        p = [subs[pk] for pk in p]
        u = [[subs[c] for c in uk] for uk in u]
    P = sum(wk * pk for wk, pk in zip(w, p))
    U = [sum(w[k] * p[k] * u[k][i] for k in range(K)) / P for i in range(d)]
    fm = P * sum((v[i] - U[i]) ** 2 for i in range(d))
    cfm = sum(w[k] * p[k] * sum((v[i] - u[k][i]) ** 2 for i in range(d)) for k in range(K))
    variance = sum(w[k] * p[k] * sum((u[k][i] - U[i]) ** 2 for i in range(d)) for k in range(K))
    return theta, fm, cfm, variance


def residuals(K: int, d: int, gaussian: bool = False) -> dict[str, sp.Expr]:
    """The expressions that must vanish identically.

    For the Gaussian case the loss gap is reduced with each exponential factor replaced by a positive symbol
    (an identity in those symbols holds a fortiori for their values); sympy's expansion of products of the
    exponentials themselves is slow and adds nothing.
    """
    theta, fm, cfm, variance = integrands(K, d, gaussian)
    gap = cfm - fm - variance
    if gaussian:
        gap = gap.xreplace({a: sp.Symbol(f"E_{i}", positive=True)
                            for i, a in enumerate(sorted(gap.atoms(sp.exp), key=str))})
    return {
        "gradient": sp.diff(fm, theta) - sp.diff(cfm, theta),
        "gap_is_variance": gap,
        "variance_is_theta_free": sp.diff(variance, theta),
    }


def _display_k2():
    """The K = 2, d = 1 gradients and gap, printed from sympy with v, ∇θ v as plain symbols."""
    theta, fm, cfm, variance = integrands(2, 1)
    v = sp.Function("v1")(theta)
    V, DV = sp.Symbol("v"), sp.Symbol("Dv")

    def show(e: sp.Expr) -> str:
        e = e.subs(sp.Derivative(v, theta), DV).subs(v, V)
        return typst(e, names={"Dv": "(nabla_theta v)"})

    g_fm = sp.factor(sp.cancel(sp.diff(fm, theta)))
    g_cfm = sp.factor(sp.expand(sp.diff(cfm, theta)))
    gap = sp.factor(sp.cancel(cfm - fm))
    return show(g_fm), show(g_cfm), show(gap)


def derive(K: int = 3, d: int = 2) -> list[Derivation]:
    """The symbolic record for Theorem 2 (its numeric Monte-Carlo companion lives in numeric_thm2)."""
    generic = residuals(K, d)
    gauss = residuals(2, 2, gaussian=True)
    res = {f"{k} (K={K}, d={d}, generic p_k, u_k)": symbolic_residual(e) for k, e in generic.items()}
    res.update({f"{k} (K=2, d=2, Gaussian p_k, Theorem-3 u_k)": symbolic_residual(e) for k, e in gauss.items()})
    residual = max(res.values())
    g_fm, g_cfm, gap = _display_k2()
    steps = [
        Step('cal(L)_"FM" (theta) = bb(E)_(t, p_t (x)) norm(v_t (x) - u_t (x))^2 , quad '
             'cal(L)_"CFM" (theta) = bb(E)_(t, q(x_1), p_t (x | x_1)) norm(v_t (x) - u_t (x | x_1))^2',
             "the two objectives (eqs. 5 and 9); t ~ U[0, 1]"),
        Step('p_t (x) = integral p_t (x | x_1) q(x_1) dif x_1 , quad '
             'u_t (x) = integral u_t (x | x_1) frac(p_t (x | x_1) q(x_1), p_t (x)) dif x_1',
             "marginal path and marginal field (eqs. 6 and 8): dividing by p_t(x) needs p_t(x) > 0"),
        Step('q(x_1) = sum_(k=1)^K w_k delta(x_1 - c_k) ==> p_t (x) = sum_(k=1)^K w_k p_k , quad '
             'u_t (x) = frac(sum_k w_k p_k u_k, sum_k w_k p_k) , quad '
             'p_k = cal(N)(x | mu_t (c_k), sigma_t (c_k)^2 I) , quad u_k = u_t (x | c_k)',
             "a K-component mixture target with Gaussian conditional paths (p_1 is a Gaussian mixture)"),
        Step(f'K = 2, d = 1: quad g_"FM" := nabla_theta [p_t (x) (v - u_t (x))^2] = {g_fm}',
             "θ-gradient of the FM integrand times its density, computed by sympy (v = v_θ(x) generic)"),
        Step(f'g_"CFM" := nabla_theta sum_k w_k p_k (v - u_k)^2 = {g_cfm}',
             "θ-gradient of the CFM integrand times its density: the same expression"),
        Step('g_"FM" - g_"CFM" = 2 (nabla_theta v)^T [(p_t (x) v - sum_k w_k p_k u_k) - '
             '(sum_k w_k p_k v - sum_k w_k p_k u_k)] = 0',
             f"pointwise in x and t; sympy reduces it to exactly 0 for K={K}, d={d} with generic p_k, u_k, and for "
             "Gaussian p_k with the Theorem-3 fields u_k"),
        Step('nabla_theta cal(L)_"FM" = bb(E)_t integral g_"FM" dif x = bb(E)_t integral g_"CFM" dif x '
             '= nabla_theta cal(L)_"CFM"',
             "integrate over x and t: ∇θ passes inside the integrals (bounded u, v, ∇θ v; dominated convergence) "
             "and the x / x1 integrals may swap (integrability; Fubini)"),
        Step(f'K = 2, d = 1: quad sum_k w_k p_k (v - u_k)^2 - p_t (x) (v - u_t (x))^2 = {gap}',
             "the loss integrands themselves differ by a term without v in it"),
        Step('cal(L)_"CFM" (theta) - cal(L)_"FM" (theta) = bb(E)_(t, p_t (x)) sum_k r_k (x) '
             'norm(u_t (x | c_k) - u_t (x))^2 , quad r_k (x) = frac(w_k p_k, p_t (x))',
             "in general: the expected conditional variance of u_t(x|x1) given x (r_k is the posterior of "
             "component k); it does not depend on θ, so the gradients agree although the losses do not"),
    ]
    # Checked: cancel(together(·)) (then cancel(expand(·)), simplify) of g_FM − g_CFM, of L_CFM − L_FM − variance
    # and of ∇θ(variance), for generic p_k, u_k (K, d below) and for Gaussian p_k with the Theorem-3 fields u_k.
    return [Derivation(
        name="thm2_gradients_agree", part="2.1", check="sympy", statement_typst=STATEMENT,
        steps_typst=[s.typst for s in steps], residual=residual, tolerance=0.0, passed=residual == 0.0,
        assumptions=[dict(a) for a in ASSUMPTIONS],
        params={"K": K, "d": d, "gaussian_K": 2, "gaussian_d": 2, "checks": res})]
