"""The sympy → Typst math printer: exact output for the notation the derivations use, and it compiles."""
from __future__ import annotations

import pytest
import sympy as sp
import typst

from tamrin.contract.persian import typst_number as number
from tamrin.flow.typst_math import compile_check, symbol_name, typst as to_typst

t, x, x1 = sp.symbols("t x x_1", real=True)
sigma, mu, alpha = sp.Function("sigma"), sp.Function("mu"), sp.Function("alpha")
PAPER = {"time": t, "time_functions": {"sigma": " (x_1)", "mu": " (x_1)", "alpha": ""}}


@pytest.mark.parametrize("name, expected", [
    ("x", "x"), ("x_1", "x_1"), ("x0", "x_0"), ("sigma", "sigma"), ("sigma_min", 'sigma_("min")'),
    ("theta", "theta"), ("w_12", "w_12"), ("FM", '"FM"'), ("u_k1", 'u_("k1")'),
])
def test_symbol_names(name, expected):
    assert symbol_name(name) == expected


@pytest.mark.parametrize("expr, expected", [
    (sp.Rational(-1, 2) * x, "-frac(x, 2)"),
    (x ** 2 + 2 * x - 1, "x^2 + 2 x - 1"),
    (1 - t, "1 - t"),
    (-t + x1, "x_1 - t"),  # a positive term leads
    (x / (1 + t), "frac(x, t + 1)"),
    (sp.sqrt(1 - x ** 2), "sqrt(1 - x^2)"),
    (x ** (-2), "frac(1, x^2)"),
    (sp.exp(-x ** 2 / 2), "e^(-frac(x^2, 2))"),
    ((x - 1) ** 2 * (x + 2), "(x - 1)^2 (x + 2)"),
    (2 * 3 * sp.Symbol("a", commutative=True) * sp.Integer(1), "6 a"),
])
def test_plain_expressions(expr, expected):
    assert to_typst(expr) == expected


def test_paper_notation_for_time_functions():
    u = sp.diff(sigma(t), t) / sigma(t) * (x - mu(t)) + sp.diff(mu(t), t)
    assert to_typst(u, **PAPER) == "frac(sigma'_t (x_1) (x - mu_t (x_1)), sigma_t (x_1)) + mu'_t (x_1)"
    # at a shifted argument the subscript is the argument and the (x_1) suffix is dropped
    dv = sp.diff(sigma(1 - t), t)  # = −σ'(1 − t), a Subs of a Derivative
    assert to_typst(dv, **PAPER) == "-sigma'_(1 - t)"
    assert to_typst(alpha(1 - t) ** 2, **PAPER) == "alpha_(1 - t)^2"
    assert to_typst(sp.diff(sigma(t), t, 2), **PAPER) == "sigma''_t (x_1)"
    # a derivative in another variable is a partial derivative
    v = sp.Function("v")(x, sp.Symbol("theta"))
    assert to_typst(sp.diff(v, sp.Symbol("theta"))) == "partial_(theta) v (x, theta)"


def test_name_overrides():
    assert to_typst(2 * sp.Symbol("Dv") * sp.Symbol("v"), names={"Dv": "(nabla_theta v)"}) == "2 (nabla_theta v) v"


@pytest.mark.parametrize("expr", [
    sp.Piecewise((x, x > 0), (0, True)), sp.pi, sp.E, sp.I, sp.oo, -sp.oo, sp.Rational(3, 4), sp.Float(0.5),
    sp.log(x), sp.Abs(x), sp.sin(x), sp.Eq(x, 2), sp.Integral(x, (x, 0, t)), sp.Sum(x, (x, 1, t)),
    sp.Indexed("w", x), sp.Matrix([x, t]), x + sp.Rational(1, 2),
])
def test_unsupported_expression_raises_instead_of_printing_garbage(expr):
    """The derivations need no rule for these: a new derivation that does fails loudly, not printed wrong."""
    with pytest.raises(TypeError, match="no Typst rule"):
        to_typst(expr)


def test_output_compiles_and_bad_math_is_caught():
    exprs = [
        sp.diff(sigma(t), t) / sigma(t) * (x - mu(t)) + sp.diff(mu(t), t),
        sp.diff(alpha(1 - t), t) / (1 - alpha(1 - t) ** 2) * (alpha(1 - t) * x - x1),
        sp.exp(-(x - mu(t)) ** 2 / (2 * sigma(t) ** 2)) / sp.sqrt(2 * sp.Symbol("pi")),
        (x1 - (1 - sp.Symbol("sigma_min")) * x) / (1 - (1 - sp.Symbol("sigma_min")) * t),
        sp.Rational(-7, 3) * x * sp.Symbol("theta") ** 3,
    ]
    compile_check([to_typst(e, **PAPER) for e in exprs])
    with pytest.raises(typst.TypstError):
        compile_check(["frac(a, b"])
    with pytest.raises(typst.TypstError):
        compile_check(["ab + 1"])  # juxtaposed letters without a space are an unknown variable in Typst


def test_numbers_in_typst():
    assert number(0.075) == "0.075"
    assert number(24.61) == "24.6"
    assert number(1.8e-10) == "1.8 dot 10^(-10)"
    assert number(0.0) == "0"
    compile_check([f"x = {number(v)}" for v in (1.8e-10, 3.2e7, -0.5)])
