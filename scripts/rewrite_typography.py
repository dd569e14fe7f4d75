"""Mechanical template rewrites for the typography mechanisms of templates/style.typ (issue 17), so they can be
re-applied to prose written before them. Idempotent; prints what it changed. The report lint
(tests/typography_lint.py) finds what these rules cannot rewrite.

    python scripts/rewrite_typography.py templates/sections/*.typ.j2 templates/results/*.typ.j2

Rules:
  assignment  `$h = $ ⟦ x | fa ⟧`, `$h =$ ⟦ x | fa(2) ⟧`, `$P = $ ⟦ x | fa(none, true) ⟧`
              → `⟦ x | eq("h") ⟧`, `⟦ x | eq("h", 2) ⟧`, `⟦ x | eq("P", grouping=true) ⟧` (one formula)
  cited-gloss `(LLaVA-1.5 @llava15)` → `#en[(LLaVA-1.5 @llava15)]` (a citation inside a gloss)
  math-word   `$N$-gram` → `#en[$N$-gram]` (math glued to Latin letters)
  percent     `⟦ x | fa(1) ⟧٪` → `⟦ x | percent(1) ⟧` (the sign on the same side in every context)
  mean-std    `⟦ a.mean | fa(3) ⟧ ± ⟦ a.std | fa(3) ⟧` → `⟦ a.mean | pm(a.std, 3) ⟧` (reads mean ± std)
  ellipsis    `` `<loc0000>`… `` → `` `<loc0000>…` ``, `«a photo of a …»` → `«#en[a photo of a …]»` (an ellipsis that
              ends a Latin run belongs inside it)
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

_FA_ARGS = r"fa(?:\((?P<args>[^()]*)\))?"


def _eq_call(symbol: str, args: str | None) -> str:
    parts = [p.strip() for p in (args or "").split(",") if p.strip()]
    decimals = parts[0] if parts else "none"
    grouping = parts[1] if len(parts) > 1 else "false"
    out = [f'"{symbol}"' if '"' not in symbol else f"'{symbol}'"]
    if decimals != "none":
        out.append(decimals)
    if grouping == "true":
        out.append("grouping=true")
    return "eq(" + ", ".join(out) + ")"


def assignment(src: str) -> str:
    rx = re.compile(r"\$(?P<sym>[^$]+?)\s*=\s*\$\s*⟦\s*(?P<expr>[^⟧|]+?)\s*\|\s*" + _FA_ARGS + r"\s*⟧")
    return rx.sub(lambda m: f"⟦ {m['expr']} | {_eq_call(m['sym'].strip(), m['args'])} ⟧", src)


def cited_gloss(src: str) -> str:
    rx = re.compile(r"(?<!#en\[)\((?P<body>[A-Za-z][^()\n؀-ۿ@]*?\s@[A-Za-z0-9_:.-]+)\)")
    return rx.sub(lambda m: f"#en[({m['body']})]", src)


def math_word(src: str) -> str:
    rx = re.compile(r"(?<!#en\[)(?P<math>\$[^$\s][^$]*\$)(?P<word>[-‐][A-Za-z]+)")
    return rx.sub(lambda m: f"#en[{m['math']}{m['word']}]", src)


def percent(src: str) -> str:
    rx = re.compile(r"⟦\s*(?P<expr>[^⟧|]+?)\s*\|\s*fa\((?P<d>\d+)\)\s*⟧٪")
    return rx.sub(lambda m: f"⟦ {m['expr']} | percent({m['d']}) ⟧", src)


def mean_std(src: str) -> str:
    rx = re.compile(r"⟦\s*(?P<a>[^⟧|]+?)\.mean\s*\|\s*fa\((?P<d>[^()]*)\)\s*⟧\s*±\s*⟦\s*(?P=a)\.std\s*\|\s*fa\((?P=d)\)\s*⟧")
    return rx.sub(lambda m: f"⟦ {m['a']}.mean | pm({m['a']}.std, {m['d']}) ⟧", src)


def ellipsis(src: str) -> str:
    src = re.sub(r"`([^`\n]+)`…", r"`\1…`", src)
    return re.sub(r"«(?!#en\[)([A-Za-z][^«»؀-ۿ\n]*?…)»", r"«#en[\1]»", src)


RULES = (assignment, cited_gloss, math_word, percent, mean_std, ellipsis)


def rewrite(src: str) -> str:
    for rule in RULES:
        src = rule(src)
    return src


def main(paths: list[str]) -> int:
    for name in paths:
        path = Path(name)
        old = path.read_text(encoding="utf-8")
        new = rewrite(old)
        if new != old:
            path.write_text(new, encoding="utf-8")
            changed = sum(a != b for a, b in zip(old.splitlines(), new.splitlines()))
            print(f"{name}: {changed} line(s) rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
