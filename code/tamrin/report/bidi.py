r"""One rule for Latin text inside the Persian report, applied by the renderer to the whole Typst source after
Jinja (template prose and every printed value alike), so no template carries it by hand.

Why: inside a right-to-left paragraph the Unicode bidi algorithm joins a Latin run with what stands next to it.
Persian digits (U+06F0–U+06F9) have bidi class EN, and rule W7 gives an EN after a Latin (L) run the L direction:
«حافظهٔ QLoRA ۵٫۰۹» is drawn «حافظهٔ ۵٫۰۹ QLoRA» to a right-to-left reader, and in «(I-CFM: ۲٫۷۷۴، OT-CFM: ۰٫۴۲۲)»
each value lands beside the other method. A left-to-right *isolate* (U+2066 … U+2069) is one neutral character to
the paragraph around it, so a number or a comma next to it keeps the paragraph's direction, and everything inside
stays in order (Typst follows UAX #9 isolates; tests/test_report_bidi.py reads the glyph positions back).

The rule, on markup text only (never math, code, raw, strings, labels or references — see typst_scan):
- a *Latin run* — from a Latin letter to the last Latin letter or ASCII digit (a closing parenthesis when its
  opening one is inside), over spaces, ASCII punctuation, escapes and inline math or code glued to it — is wrapped
  in U+2066 … U+2069. Sentence punctuation after it («.», «،», «:») stays outside, in the paragraph's direction.
- a *gloss* — «(English words, ABBR)» after a Persian word or a space, nothing Arabic-script inside — becomes
  `#gloss[(…)]` (style.typ): one isolate in an unbreakable box, its parentheses attached.
- a *run-in title* — a bold run ending in «.», «:» or «؟» that opens a paragraph or a list item,
  «*CLIP.* CLIP مدلی…» — becomes `#run-in[…]` (style.typ): one right-to-left isolate in a box, so the body's first
  word can neither join it nor be drawn before it.
Runs already inside an isolate (`#en[…]`, `#gloss[…]`, or U+2066 … U+2069 in the source) are left alone, so the
rule is idempotent: isolate(isolate(src)) == isolate(src).
"""
from __future__ import annotations

import re

from .typst_scan import scan

LRI, PDI = "\u2066", "\u2069"
GLOSS_FUNCTION = "gloss"  # style.typ: `#let gloss(body) = box(en(body))`
GLOSS_BOX_LIMIT = 48  # characters of source: a longer gloss stays a breakable isolate (a box must fit its line)

# The view the patterns run on: one character per source character.
_ATOM = "\x01"  # a character of an inline formula or an inline code span (left to right already)
_ESC = "\x02"  # the backslash of a markup escape
_LIT = "\x03"  # the escaped character when it is punctuation (`\-`, `\.`, `\*` print it literally)
_STOP = "\x00"  # anything else that is not markup text: code, display math, labels, references, comments

_INNER = r"[A-Za-z0-9\x01\x02\x03 \-‐‑.,;:/'’&+%()!?·–—]"
_RUN = re.compile(rf"[A-Za-z\x01]{_INNER}*")
_GLOSS = re.compile(r"\((?=[*_]?[A-Za-z\x01])[A-Za-z0-9\x01\x02\x03 \-‐‑.,;:/'’&+%!?·–—*_]*[A-Za-z0-9\x01.*_]\)")
_END_OK = re.compile(r"[A-Za-z0-9\x01]")


def _view(src: str) -> tuple[str, list[tuple[int, int]]]:
    """`src` as the patterns see it, and the spans already isolated."""
    sc = scan(src)
    view = [ch if markup else _STOP for ch, markup in zip(src, sc.markup)]
    for m in re.finditer(rb"\x01", sc.escaped):
        i = m.start()
        if src[i] == "\\" and i + 1 < len(src):
            view[i] = _ESC
            view[i + 1] = src[i + 1] if src[i + 1].isalnum() else _LIT
    for a, b in sc.maths:
        display = b - a >= 3 and src[a + 1] in " \n\t" and src[b - 2] in " \n\t"
        if not display:
            view[a:b] = [_ATOM] * (b - a)
    for a, b in sc.raws:
        if "\n" not in src[a:b] and not src.startswith("```", a):
            view[a:b] = [_ATOM] * (b - a)
    for m in re.finditer(r"#raw\(", src):  # an inline `#raw(…)` call: left to right already, like `…`
        end = _call_end(src, m.end() - 1)
        if end is not None and view[m.start()] == _STOP and "\n" not in src[m.start():end]:
            view[m.start():end] = [_ATOM] * (end - m.start())
    isolated = list(sc.isolates)
    for a, b in sc.isolates:  # `#en[…]`, `#gloss[…]`: one left-to-right atom that a run may take in
        start = src.rfind("#", 0, a)
        if start >= 0 and view[start] == _STOP:
            view[start:b + 1] = [_ATOM] * (b + 1 - start)
    depth_start = []
    for m in re.finditer(f"[{LRI}{PDI}]", src):  # literal isolates typed into the source (or left by an earlier pass)
        if m.group() == LRI:
            depth_start.append(m.start())
        elif depth_start:
            isolated.append((depth_start.pop(), m.end()))
    return "".join(view), isolated


def _call_end(src: str, i: int) -> int | None:
    """The index after the «)» that closes the «(» at i (strings skipped)."""
    depth, k = 0, i
    while k < len(src):
        c = src[k]
        if c == '"':
            k += 1
            while k < len(src) and src[k] != '"':
                k += 2 if src[k] == "\\" else 1
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return k + 1
        k += 1
    return None


def _inside(spans: list[tuple[int, int]], a: int, b: int) -> bool:
    return any(c <= a and b <= d for c, d in spans)


def _trim(view: str, a: int, b: int) -> int:
    """The end of the Latin run view[a:b]: before an unmatched «)», an unclosed «(», and trailing punctuation."""
    opened = []
    for k in range(a, b):
        c = view[k]
        if c == "(":
            opened.append(k)
        elif c == ")":
            if not opened:
                b = k
                break
            opened.pop()
    if opened:
        b = min(b, opened[0])
    while b > a and not (_END_OK.match(view[b - 1])
                         or (view[b - 1] == ")" and view[a:b].count("(") == view[a:b].count(")"))):
        b -= 1
    if b > a and view[b - 1] == _ESC:
        b -= 1
    return b


def latin_spans(src: str, view: str, isolated: list[tuple[int, int]]) -> list[tuple[int, int, str]]:
    """(start, end, kind) of every Latin run ('run') and gloss ('gloss') of `src` not yet isolated."""
    out: list[tuple[int, int, str]] = []
    taken = bytearray(len(src))
    for m in _GLOSS.finditer(view):
        a, b = m.span()
        before = view[a - 1] if a else " "
        if _END_OK.match(before) or before in ")]" or _inside(isolated, a, b):
            continue  # after a Latin letter or digit it is a call: softmax(x)
        if not re.search(r"[A-Za-z]{2}", view[a:b]) or view[a:b].count("*") % 2 or view[a:b].count("_") % 2:
            continue  # a gloss has words; emphasis inside it opens and closes there («(Visual *Question* Answering)»)
        out.append((a, b, "gloss"))
        taken[a:b] = b"\x01" * (b - a)
    view_runs = "".join(_STOP if taken[k] else c for k, c in enumerate(view))  # runs stop at a gloss
    pos = 0
    while (m := _RUN.search(view_runs, pos)) is not None:
        a = m.start()
        b = _trim(view_runs, a, m.end())
        # Go on right after the trimmed run: what was cut («FP4 (E3M0 …» → «FP4») may hold another run.
        pos = max(b, a + 1)
        body = view_runs[a:b]
        if b <= a or _inside(isolated, a, b):
            continue
        if not re.search(r"[A-Za-z]", body) and not re.search(r"\x01[^\x01 ]+\x01", body):
            continue  # no Latin letter, and not two code spans or formulas glued by punctuation (`yes`/`no`)
        if (a and view[a - 1] == LRI) or (b < len(view) and view[b] == PDI):
            continue
        out.append((a, b, "run"))
    return sorted(out)


def _phrases(src: str, spans: list[tuple[int, int, str]]) -> list[list[tuple[int, int, str]]]:
    """Runs and glosses with only spaces between them, «SigLIP (Sigmoid Loss …)»: one left-to-right phrase (two
    isolates side by side would be drawn right to left, the gloss before its term)."""
    out: list[list[tuple[int, int, str]]] = []
    for span in spans:
        if out and src[out[-1][-1][1]:span[0]].strip(" ") == "" and "\n" not in src[out[-1][-1][1]:span[0]]:
            out[-1].append(span)
        else:
            out.append([span])
    return out


# A hyphenated Latin word, ROUGE-L, I-CFM, Gemma\-2B (a printed value escapes its hyphen).
_HYPHENATED = re.compile(r"(?<![A-Za-z0-9\\])[A-Za-z0-9]+(?:\\?-[A-Za-z0-9]+)+(?![A-Za-z0-9])")


def _join_hyphens(src: str, view: str, a: int, b: int) -> str:
    """src[a:b] with each hyphenated word of its markup text (not in a formula, code or a nested isolate) in a
    `#box[…]`: it never breaks at its hyphen. Not U+2011 (no glyph in Vazirmatn: the fallback touched the next
    letter) and not a word joiner (Typst maps the hyphen glyph of «-⁠» to both characters for the whole PDF, so
    URLs copied from the bibliography would carry it). Inside the run's isolate the box, a bidi neutral, takes
    the run's direction."""
    out, last = [], a
    for m in _HYPHENATED.finditer(src, a, b):
        if any(view[k] in (_ATOM, _STOP) for k in range(m.start(), m.end())) or src[m.end():m.end() + 1] in ("(", "["):
            continue
        out += [src[last:m.start()], f"#box[{m.group()}]"]
        last = m.end()
    out.append(src[last:b])
    return "".join(out)


def _gloss(body: str, after: str, length: int) -> str:
    """A gloss of `length` source characters: boxed when it fits comfortably on a line."""
    if length <= GLOSS_BOX_LIMIT and after not in ("(", "["):
        return f"#{GLOSS_FUNCTION}[{body}]"
    return LRI + body + PDI


def isolate_latin(src: str) -> str:
    """`src` with every Latin run and gloss in markup set as a left-to-right isolate (see the module doc)."""
    view, isolated = _view(src)
    spans = latin_spans(src, view, isolated)
    if not spans:
        return src
    parts, last = [], 0
    for phrase in _phrases(src, spans):
        a, b = phrase[0][0], phrase[-1][1]
        parts.append(src[last:a])
        if len(phrase) == 1 and phrase[0][2] == "gloss":
            parts.append(_gloss(_join_hyphens(src, view, a, b), src[b:b + 1], b - a))
        else:
            pieces, at = [], a
            for x, y, kind in phrase:
                pieces.append(src[at:x])
                body = _join_hyphens(src, view, x, y)
                pieces.append(_gloss(body, src[y:y + 1], y - x) if kind == "gloss" else body)
                at = y
            parts.append(LRI + "".join(pieces) + PDI)
        last = b
    parts.append(src[last:])
    return "".join(parts)


RUN_IN_FUNCTION = "run-in"  # style.typ: `#let run-in(body) = box(strong[RLI body PDI])`
_RUN_IN = re.compile(r"^(?P<lead>[ \t]*(?:[-+] |\d+\. )?)\*(?P<body>[^*\n]+?[.:؟?!])\*(?=[ \t\n]|$)", re.M)


def mark_run_ins(src: str) -> str:
    """`src` with every bold run-in title (see the module doc) written as `#run-in[…]`."""
    sc = scan(src)
    parts, last = [], 0
    for m in _RUN_IN.finditer(src):
        star = m.start("body") - 1
        if not sc.markup[star]:
            continue  # code, math or raw text
        line_start = m.start()
        previous = src[src.rfind("\n", 0, max(0, line_start - 1)) + 1:max(0, line_start - 1)]
        if m.group("lead").strip() == "" and previous.strip() and line_start > 0:
            continue  # inside a paragraph: not its start
        parts += [src[last:star], f"#{RUN_IN_FUNCTION}[{m.group('body')}]"]
        last = m.end("body") + 1
    parts.append(src[last:])
    return "".join(parts)


def bidi_rules(src: str) -> str:
    """Every rule of this module on the rendered report source."""
    return mark_run_ins(isolate_latin(src))
