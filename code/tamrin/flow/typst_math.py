"""A small sympy → Typst math printer, so every derivation step can be typeset by the report as it was checked.

Typst math differs from LaTeX: `frac(a, b)`, `sqrt(x)`, `x_1`, `x_(1 - t)`, `sigma'_t`, multi-letter text in
quotes (`"min"`), and juxtaposed single letters need a space (`a b`, never `ab`). Anything without a rule raises
`TypeError` instead of silently printing LaTeX or Python syntax. A Symbol `name_sub` prints as `name_sub` (Greek
stays Greek, other multi-letter parts are quoted); an undefined function listed in `time_functions` prints in the
paper's notation (`sigma(t)` → `sigma_t (x_1)`, its t-derivative `sigma'_t (x_1)`, at 1 - t `sigma_(1 - t)`).
"""
from __future__ import annotations

from typing import Any

import sympy as sp
from sympy.core.function import AppliedUndef
from sympy.printing.precedence import PRECEDENCE, precedence
from sympy.printing.printer import Printer

GREEK = {
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu",
    "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon", "phi", "chi", "psi", "omega",
    "Gamma", "Delta", "Theta", "Lambda", "Xi", "Pi", "Sigma", "Upsilon", "Phi", "Psi", "Omega", "nabla",
}


def _atom_name(part: str) -> str:
    """One identifier part: Greek or a single letter/number as is, anything longer quoted as upright text."""
    if part in GREEK or len(part) == 1 or part.isdigit():
        return part
    return f'"{part}"'


def symbol_name(name: str) -> str:
    """`x_1` → `x_1`, `sigma_min` → `sigma_"min"`, `x0` → `x_0`, `u_k1` → `u_"k1"`."""
    base, _, sub = name.partition("_")
    if not sub:
        stripped = base.rstrip("0123456789")
        if stripped and stripped != base:
            base, sub = stripped, base[len(stripped):]
    out = _atom_name(base)
    if sub:
        sub_t = _atom_name(sub) if "_" not in sub else symbol_name(sub)
        out += f"_{sub_t}" if (len(sub) == 1 or sub.isdigit() or sub in GREEK) else f"_({sub_t})"
    return out


def _factor_rank(f: sp.Basic) -> int:
    """Paper order inside a product: coefficient functions first, bare symbols next, parenthesised sums last."""
    if isinstance(f, (AppliedUndef, sp.Derivative, sp.Subs, sp.Function)):
        return 0
    if isinstance(f, sp.Pow) and not isinstance(f.base, sp.Add):
        return 1
    if isinstance(f, sp.Symbol):
        return 2
    return 3


class TypstPrinter(Printer):
    """Print a sympy expression as a Typst math string (without the surrounding `$`)."""

    _default_settings: dict[str, Any] = {
        "order": None,
        "time": None,  # the time Symbol for the paper's subscript notation
        "time_functions": {},  # function name -> suffix printed after it, e.g. {"sigma": " (x_1)"}
        "names": {},  # Symbol or function name -> Typst text override
    }

    def _print_Symbol(self, expr: sp.Symbol) -> str:
        return self._settings["names"].get(expr.name) or symbol_name(expr.name)

    def _print_Integer(self, expr: sp.Integer) -> str:  # also Zero, One, NegativeOne (their base class)
        return str(int(expr))

    def parens(self, expr: sp.Basic, level: int, strict: bool = False) -> str:
        """Print `expr`, in parentheses when it binds weaker than `level`."""
        prec = precedence(expr)
        if prec < level or (strict and prec <= level):
            return f"({self._print(expr)})"
        return self._print(expr)

    def _time_arg(self, arg: sp.Basic) -> str:
        text = self._print(arg)
        return text if arg == self._settings["time"] or len(text) == 1 else f"({text})"

    def _fname(self, func: Any) -> str:
        name = func.__name__
        return self._settings["names"].get(name, symbol_name(name))

    def _time_function(self, func: Any, arg: sp.Basic, order: int = 0) -> str:
        """`sigma_t (x_1)`, `sigma'_t (x_1)` at the time symbol; `sigma_(1 - t)`, `sigma'_(1 - t)` elsewhere."""
        suffix = self._settings["time_functions"][func.__name__] if arg == self._settings["time"] else ""
        return f"{self._fname(func)}{chr(39) * order}_{self._time_arg(arg)}{suffix}"

    def _print_Add(self, expr: sp.Add) -> str:
        terms = list(self._as_ordered_terms(expr, order=self._settings["order"]))
        # Lead with a positive term when there is one: `x_1 - a x`, not `-a x + x_1`.
        if terms[0].could_extract_minus_sign():
            first_pos = next((i for i, term in enumerate(terms) if not term.could_extract_minus_sign()), None)
            if first_pos is not None:
                terms.insert(0, terms.pop(first_pos))
        out = ""
        for term in terms:
            negative = term.could_extract_minus_sign()
            sign = (" - " if negative else " + ") if out else ("-" if negative else "")
            out += sign + self.parens(-term if negative else term, PRECEDENCE["Add"])
        return out

    def _print_Mul(self, expr: sp.Mul) -> str:
        if expr.could_extract_minus_sign():
            inner = -expr
            text = self._print(inner) if not isinstance(inner, sp.Add) else f"({self._print(inner)})"
            return f"-{text}"
        num, den = sp.fraction(expr, exact=True)
        if den != 1:
            return f"frac({self._print(num)}, {self._print(den)})"
        coeff, rest = expr.as_coeff_mul()
        parts = [] if coeff == 1 else [self._print(coeff)]
        parts += [self.parens(f, PRECEDENCE["Mul"]) for f in sorted(rest, key=_factor_rank)]
        # Juxtaposition needs a space in Typst; two numbers side by side need an explicit dot.
        out = parts[0]
        for prev, nxt in zip(parts, parts[1:]):
            sep = " dot " if (prev[-1:].isdigit() and nxt[:1].isdigit()) else " "
            out += sep + nxt
        return out

    def _print_Pow(self, expr: sp.Pow) -> str:
        base, exp = expr.as_base_exp()
        if exp == sp.Rational(1, 2):
            return f"sqrt({self._print(base)})"
        if exp.is_Number and exp < 0:
            return f"frac(1, {self._print(sp.Pow(base, -exp, evaluate=False))})"
        b = self.parens(base, PRECEDENCE["Pow"], strict=True)
        if isinstance(base, (sp.Function, sp.Derivative, sp.Subs)) and not isinstance(base, AppliedUndef):
            b = f"({self._print(base)})"
        e = self._print(exp)
        if not (len(e) == 1 or e.isdigit()):
            e = f"({e})"
        return f"{b}^{e}"

    def _print_exp(self, expr: sp.exp) -> str:
        return f"e^({self._print(expr.args[0])})"

    def _print_AppliedUndef(self, expr: Any) -> str:
        if expr.func.__name__ in self._settings["time_functions"] and len(expr.args) == 1:
            return self._time_function(expr.func, expr.args[0])
        args = ", ".join(self._print(a) for a in expr.args)
        return f"{self._fname(expr.func)} ({args})"

    def _print_Derivative(self, expr: sp.Derivative) -> str:
        f = expr.expr
        tf = self._settings["time_functions"]
        variables = expr.variable_count
        if (isinstance(f, AppliedUndef) and f.func.__name__ in tf and len(f.args) == 1
                and len(variables) == 1 and variables[0][0] == f.args[0]):
            return self._time_function(f.func, f.args[0], int(variables[0][1]))
        total = sum(int(n) for _, n in variables)
        if total == 1:
            return f"partial_{self._time_arg(variables[0][0])} {self.parens(f, PRECEDENCE['Mul'])}"
        bottom = " ".join(f"partial {self._print(v)}" + (f"^{int(n)}" if n != 1 else "") for v, n in variables)
        return f"frac(partial^{total}, {bottom}) {self.parens(f, PRECEDENCE['Mul'])}"

    def _print_Subs(self, expr: sp.Subs) -> str:
        inner, old, new = expr.args
        tf = self._settings["time_functions"]
        if (isinstance(inner, sp.Derivative) and isinstance(inner.expr, AppliedUndef)
                and inner.expr.func.__name__ in tf and len(old) == 1 and len(inner.variable_count) == 1
                and inner.variable_count[0][0] == old[0] and inner.expr.args == (old[0],)):
            return self._time_function(inner.expr.func, new[0], int(inner.variable_count[0][1]))
        at = ", ".join(f"{self._print(o)} = {self._print(n)}" for o, n in zip(old, new))
        return f"lr({self._print(inner)} |)_({at})"

    def emptyPrinter(self, expr: Any) -> str:  # noqa: N802 - sympy's hook name
        raise TypeError(f"no Typst rule for {type(expr).__name__}: {expr!r}")


def typst(expr: Any, **settings: Any) -> str:
    """`expr` (a sympy expression, or a Python number) as Typst math, without `$`."""
    return TypstPrinter(settings).doprint(sp.sympify(expr))


def compile_check(snippets: list[str]) -> None:
    """Compile a small Typst document holding every snippet as display math; raises `typst.TypstError`."""
    import typst as typst_pkg  # imported lazily: only the checks need the compiler

    body = "\n\n".join(f"$ {s} $" for s in snippets)
    typst_pkg.compile(("#set page(width: 30cm, height: auto)\n" + body).encode("utf-8"))
