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

from .records import Derivation, Step, step_lists, symbolic_residual
from .typst_math import typst

STATEMENT = ('nabla_theta cal(L)_"FM" (theta) = nabla_theta cal(L)_"CFM" (theta) quad "whenever" quad '
             'p_t (x) > 0 quad forall x in RR^d, t in [0, 1]')

ASSUMPTIONS = [
    {"typst": "p_t (x) > 0 quad forall x in RR^d, t in [0, 1]",
     "text": "the marginal density is positive, so the marginal field u_t(x) = ∫ u_t(x|x1) p_t(x|x1) q(x1) dx1 "
             "/ p_t(x) (eq. 8) is defined at every x; Gaussian conditional paths with σ_t > 0 satisfy it",
     "text_fa": "چگالی حاشیه‌ای (marginal density) همه‌جا مثبت است، پس میدان برداری حاشیه‌ای "
                "$u_t (x) = integral u_t (x | x_1) p_t (x | x_1) q(x_1) dif x_1 \\/ p_t (x)$ (رابطهٔ ۸ مقاله) "
                "در هر نقطهٔ $x$ تعریف می‌شود؛ مسیرهای شرطی گاوسی با $sigma_t > 0$ این شرط را خودبه‌خود "
                "برآورده می‌کنند، چون آمیخته‌ای از چگالی‌های گاوسی همه‌جا مثبت است.",
     "enters_at_step": 2},
    {"typst": "integral integral norm(v_t (x))^2 p_t (x | x_1) q(x_1) dif x_1 dif x < infinity",
     "text": "integrability (q decays fast enough): Fubini lets the x- and x1-integrals swap, so "
             "E_{p_t(x)}⟨v, u_t(x)⟩ = E_{q(x1), p_t(x|x1)}⟨v, u_t(x|x1)⟩ (for a finite mixture the x1-integral "
             "is "
             "a finite sum and this is automatic)",
     "text_fa": "انتگرال‌پذیری (integrability): $q$ به‌اندازهٔ کافی سریع میرا می‌شود، پس طبق قضیهٔ فوبینی "
                "(Fubini) ترتیب انتگرال‌های روی $x$ و $x_1$ را می‌توان عوض کرد و "
                "$bb(E)_(p_t (x)) chevron.l v, u_t (x) chevron.r = "
                "bb(E)_(q(x_1), p_t (x | x_1)) chevron.l v, u_t (x | x_1) chevron.r$؛ "
                "برای آمیخته‌ای متناهی، انتگرال روی $x_1$ یک جمع متناهی است و این شرط خودبه‌خود برقرار است.",
     "enters_at_step": 7},
    {"typst": "norm(u_t), norm(v_t), norm(nabla_theta v_t) < C",
     "text": "u_t, v_t and ∇θ v_t bounded: with the integrability above, dominated convergence lets ∇θ pass "
             "inside ∫ dx and E_t, so the pointwise identity of step 6 integrates to the gradient identity",
     "text_fa": "کران‌داری $u_t$، $v_t$ و $nabla_theta v_t$: همراه با انتگرال‌پذیری، قضیهٔ همگرایی تسلطی "
                "(dominated convergence) اجازه می‌دهد $nabla_theta$ به داخل $integral dif x$ و $bb(E)_t$ برود؛ "
                "بنابراین اتحاد نقطه‌به‌نقطهٔ گام ۶ با انتگرال‌گیری به اتحاد گرادیان‌ها تبدیل می‌شود.",
     "enters_at_step": 7},
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
    all_zero = all(v == 0 for v in res.values())
    steps = [
        Step('cal(L)_"FM" (theta) = bb(E)_(t, p_t (x)) norm(v_t (x) - u_t (x))^2 , quad '
             'cal(L)_"CFM" (theta) = bb(E)_(t, q(x_1), p_t (x | x_1)) norm(v_t (x) - u_t (x | x_1))^2',
             "the two objectives (eqs. 5 and 9); t ~ U[0, 1]",
             "دو تابع هدف: تطبیق جریان (Flow Matching, FM) و تطبیق جریان شرطی (Conditional Flow Matching, CFM)، "
             "روابط ۵ و ۹ مقاله؛ زمان $t$ از توزیع یکنواخت $cal(U)[0, 1]$ نمونه‌برداری می‌شود."),
        Step('p_t (x) = integral p_t (x | x_1) q(x_1) dif x_1 , quad '
             'u_t (x) = integral u_t (x | x_1) frac(p_t (x | x_1) q(x_1), p_t (x)) dif x_1',
             "marginal path and marginal field (eqs. 6 and 8): dividing by p_t(x) needs p_t(x) > 0",
             "مسیر احتمال حاشیه‌ای (marginal probability path) و میدان حاشیه‌ای (روابط ۶ و ۸ مقاله)؛ "
             "تقسیم بر $p_t (x)$ شرط $p_t (x) > 0$ (فرض ۱) را لازم دارد."),
        Step('q(x_1) = sum_(k=1)^K w_k delta(x_1 - c_k) ==> p_t (x) = sum_(k=1)^K w_k p_k , quad '
             'u_t (x) = frac(sum_k w_k p_k u_k, sum_k w_k p_k) , quad '
             'p_k = cal(N)(x | mu_t (c_k), sigma_t (c_k)^2 I) , quad u_k = u_t (x | c_k)',
             "a K-component mixture target with Gaussian conditional paths (p_1 is a Gaussian mixture)",
             "توزیع هدف آمیخته‌ای با $K$ مؤلفه از جرم‌های نقطه‌ای $c_k$ با وزن‌های $w_k$ است و مسیرهای شرطی "
             "گاوسی‌اند، پس $p_1$ یک آمیختهٔ گاوسی (Gaussian mixture) است؛ $p_k$ و $u_k$ چگالی و میدان شرطی "
             "مؤلفهٔ $k$ در یک نقطهٔ ثابت $(x, t)$ هستند و انتگرال‌های گام ۲ به جمع تبدیل می‌شوند."),
        Step(f'K = 2, d = 1: quad g_"FM" := nabla_theta [p_t (x) (v - u_t (x))^2] = {g_fm}',
             "θ-gradient of the FM integrand times its density, computed by sympy (v = v_θ(x) generic)",
             "گرادیان نسبت به $theta$ از انتگرال‌دهٔ FM ضرب‌شده در چگالی $p_t (x)$، که sympy برای $K = 2$ و "
             "$d = 1$ محاسبه کرده است؛ $v = v_theta (x)$ تابعی دلخواه از $theta$ است."),
        Step(f'g_"CFM" := nabla_theta sum_k w_k p_k (v - u_k)^2 = {g_cfm}',
             "θ-gradient of the CFM integrand times its density: the same expression",
             "گرادیان نسبت به $theta$ از انتگرال‌دهٔ CFM ضرب‌شده در چگالی‌های $w_k p_k$: همان عبارت گام ۴ "
             "به دست می‌آید."),
        Step('g_"FM" - g_"CFM" = 2 (nabla_theta v)^T [(p_t (x) v - sum_k w_k p_k u_k) - '
             '(sum_k w_k p_k v - sum_k w_k p_k u_k)] = 0',
             f"pointwise in x and t; sympy reduces it to exactly 0 for K={K}, d={d} with generic p_k, u_k, and for "
             "Gaussian p_k with the Theorem-3 fields u_k",
             f"این تساوی نقطه‌به‌نقطه در $x$ و $t$ برقرار است، چون $p_t (x) = sum_k w_k p_k$ و جملهٔ "
             f"$sum_k w_k p_k u_k$ در هر دو گرادیان یکسان است؛ sympy تفاضل را برای $K = {K}$ و $d = {d}$ با "
             "$p_k$ و $u_k$ دلخواه، و نیز برای $p_k$ گاوسی با میدان‌های $u_k$ قضیهٔ ۳، دقیقاً به صفر می‌رساند."),
        Step('nabla_theta cal(L)_"FM" = bb(E)_t integral g_"FM" dif x = bb(E)_t integral g_"CFM" dif x '
             '= nabla_theta cal(L)_"CFM"',
             "integrate over x and t: ∇θ passes inside the integrals (bounded u, v, ∇θ v; dominated convergence) "
             "and the x / x1 integrals may swap (integrability; Fubini)",
             "انتگرال‌گیری روی $x$ و $t$: عملگر $nabla_theta$ به داخل انتگرال‌ها می‌رود (کران‌داری $u$، $v$ و "
             "$nabla_theta v$ و قضیهٔ همگرایی تسلطی؛ فرض ۳) و ترتیب انتگرال‌های $x$ و $x_1$ عوض‌شدنی است "
             "(انتگرال‌پذیری و قضیهٔ فوبینی؛ فرض ۲)."),
        Step(f'K = 2, d = 1: quad sum_k w_k p_k (v - u_k)^2 - p_t (x) (v - u_t (x))^2 = {gap}',
             "the loss integrands themselves differ by a term without v in it",
             "خود انتگرال‌ده‌های دو تابع زیان با جمله‌ای تفاوت دارند که $v$ (و در نتیجه $theta$) در آن "
             "نیست."),
        Step('cal(L)_"CFM" (theta) - cal(L)_"FM" (theta) = bb(E)_(t, p_t (x)) sum_k r_k (x) '
             'norm(u_t (x | c_k) - u_t (x))^2 , quad r_k (x) = frac(w_k p_k, p_t (x))',
             "in general: the expected conditional variance of u_t(x|x1) given x (r_k is the posterior of "
             "component k); it does not depend on θ, so the gradients agree although the losses do not",
             "در حالت کلی، تفاضل دو زیان امید واریانس شرطی $u_t (x | x_1)$ به شرط $x$ است ($r_k (x)$ احتمال "
             "پسین (posterior) مؤلفهٔ $k$ است)؛ این کمیت به $theta$ وابسته نیست، پس گرادیان‌ها برابرند، "
             "هرچند خود زیان‌ها برابر نیستند."),
    ]
    method = ("sympy: cancel(together(·)) (then cancel(expand(·)), simplify) of g_FM − g_CFM, of "
              "L_CFM − L_FM − variance and "
              "of ∇θ(variance), for " + "; ".join(f"{k}: {v:g}" for k, v in res.items()))
    residuals_fa = ("هر شش باقی‌مانده دقیقاً صفر است" if all_zero else
                    "باقی‌مانده‌ها: " + "، ".join(f"${v:g}$" for v in res.values()))
    method_fa = ("ساده‌سازی نمادین با sympy (ابتدا `cancel(together(·))`، سپس `cancel(expand(·))` و "
                 "`simplify`) برای سه عبارت $g_\"FM\" - g_\"CFM\"$، "
                 "$cal(L)_\"CFM\" - cal(L)_\"FM\" - V$ و $nabla_theta V$ که $V$ جملهٔ واریانس گام ۹ است؛ "
                 f"یک بار با $K = {K}$ و $d = {d}$ و $p_k$ و $u_k$ دلخواه، و یک بار با $K = 2$ و $d = 2$، "
                 f"$p_k$ گاوسی و $u_k$ قضیهٔ ۳؛ {residuals_fa}.")
    return [Derivation(
        name="thm2_gradients_agree", title="Theorem 2: ∇θ L_FM = ∇θ L_CFM (pointwise identity of the integrands)",
        title_fa='قضیهٔ ۲: $nabla_theta cal(L)_"FM" = nabla_theta cal(L)_"CFM"$ '
                 '(اتحاد نقطه‌به‌نقطهٔ انتگرال‌ده‌ها)',
        part="2.1", statement_typst=STATEMENT, **step_lists(steps), residual=residual, tolerance=0.0,
        passed=residual == 0.0, method=method, method_fa=method_fa, assumptions=[dict(a) for a in ASSUMPTIONS])]
