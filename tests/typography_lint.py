r"""Typographic checks of the rendered report: the mechanisms of templates/style.typ that keep mixed-direction
text in order, and what they cannot reach.

Source checks (on report/report.typ, after Jinja; locations are its lines):
- `split-assignment`: a symbol in math and its value in text, `$h = $ ۲۰۴۸` or `$h$ = ۲۰۴۸`: in a right-to-left
  line the value lands on the other side of the symbol (to the eye «d_h = 16384» of the next assignment).
  Write the whole assignment as one formula: `⟦ x | eq("h") ⟧`.
- `gloss-unit`: a parenthesised English run, "(Visual Question Answering, VQA)", that style.typ's gloss show rule
  cannot see as one piece (a reference, math, code or emphasis inside it interrupts the text run) and that is not
  inside `#en[…]`: split over two lines, its words and parentheses read out of order.
- `latin-isolate`: Latin with punctuation at an edge that no show rule isolates: math or code glued to Latin
  letters (`$N$-gram`), a Latin function call with markup inside (`min($a$, $b$)`), a leading "-" or "/"
  (`-100`) or a trailing "/" (`results/`) outside code. Wrap the run in `#en[…]`.
- `inline-math`: an inline formula longer than INLINE_MATH_LIMIT symbols. Inline formulas never break (a box), so
  a long one overflows or stretches its line: make it a display equation. Also Persian words inside an inline
  formula: Typst lays such a formula out right to left (`$min("الف", "ب")$` reads «(ب, الف)min»); write them
  in the prose.

Layout check (on the compiled document):
- `orphan`: a heading, box title or lead-in ending in «:» with no room under it on its page for a line of what
  follows (style.typ's `keep-probe` metadata, `<tamrin-keep>`).

The show rules' patterns are read from style.typ (`#let NAME-pattern = "…"`), so the lint knows exactly what
they catch.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from tamrin.report.typst_scan import scan

INLINE_MATH_LIMIT = 60  # symbols (see math_symbols): about half a line of body text

_ARABIC = "\u0600-\u06ff\u0750-\u077f\ufb50-\ufdff\ufe70-\ufeff"
_RELATION_END = re.compile(r"(=|approx|≈|<=|>=|<|>|≤|≥)\s*$")
_NUMBER_START = re.compile(r"\s*[−\-+]?[0-9\u06f0-\u06f9]")
_RELATION_THEN_NUMBER = re.compile(r"\s*(=|≈|≤|≥|<|>)\s*[−\-+]?[0-9\u06f0-\u06f9]")
_LATIN = re.compile(r"[A-Za-z]")
_ARABIC_LETTER = re.compile(f"[{_ARABIC}]")
_GLUED_AFTER = re.compile(r"[-‐‑/.:'’]?[A-Za-z]+|…")  # after a math or code span
_GLUED_BEFORE = re.compile(r"[A-Za-z0-9][-‐‑/.(]?$")  # before a math or code span
_LEADING = re.compile(r"(?:^|(?<=\s))[-/][A-Za-z0-9]")  # after a Persian letter it is a compound: «چند-GPU»
_TRAILING = re.compile(f"[A-Za-z0-9](?:/| ?…)(?=[\\s»){_ARABIC}]|$)")
_CALL = re.compile(r"[A-Za-z][A-Za-z0-9_]*\(")
_PATTERN_LINE = re.compile(r'^#let ([a-z-]+)-pattern = "((?:[^"\\]|\\.)*)"', re.M)
# Math names that draw one symbol, and styling functions that draw none of their own.
_ONE_SYMBOL = re.compile(r"[A-Za-z]{2,}(?:\.[a-z]+)*")
_STYLING = {"cal", "bold", "bb", "upright", "italic", "frak", "sans", "mono", "serif", "hat", "tilde", "overline",
            "dot", "arrow", "vec", "abs", "norm", "sqrt", "frac", "op", "lr", "attach", "limits", "scripts"}


@lru_cache(maxsize=4)
def show_rule_patterns(style_path: str) -> dict[str, re.Pattern]:
    """The regexes of style.typ's show rules ({'gloss': …, 'call': …, 'hyphenated': …})."""
    src = Path(style_path).read_text(encoding="utf-8")
    out = {}
    for name, literal in _PATTERN_LINE.findall(src):
        out[name] = re.compile(re.sub(r"\\(.)", r"\1", literal))  # Typst string escapes → the regex text
    missing = {"gloss", "call", "hyphenated"} - set(out)
    if missing:
        raise ValueError(f"{style_path} defines no {', '.join(sorted(missing))}-pattern: the lint reads them there")
    return out


def _line(src: str, offset: int) -> int:
    return src.count("\n", 0, offset) + 1


def _snippet(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def math_symbols(body: str) -> int:
    """Rough count of the symbols an inline formula draws: a name (`alpha`, `nabla`, `integral`, `chevron.l`) is
    one, styling functions (`cal(`, `bold(`, `hat(`…), quotes, spaces, `_`/`^` and call parentheses are none;
    every other character is one."""
    n = 0
    for token in re.finditer(r'"[^"]*"|[A-Za-z]{2,}(?:\.[a-z]+)*|\S', body):
        t = token.group(0)
        if t.startswith('"'):
            n += max(1, round(len(t[1:-1]) * 0.8))
        elif _ONE_SYMBOL.fullmatch(t):
            n += 0 if t in _STYLING else 1
        elif t not in "_^\\":
            n += 1
    return n


class _Doc:
    """The rendered source with what the scanner knows about it, as masks (one byte per character)."""

    def __init__(self, src: str, scanned: object | None = None) -> None:
        self.src = src
        self.sc = scanned if scanned is not None else scan(src)
        self.inline_maths = [(a, b) for a, b in self.sc.maths if not self.is_display(a, b)]
        n = len(src)
        as_int = lambda b: int.from_bytes(b, "big")  # noqa: E731 - bytewise 0/1 masks as one big integer
        self.mask = (as_int(self.sc.markup) | as_int(self.sc.escaped)).to_bytes(n, "big")  # 1: text a rule sees
        iso = bytearray(n)
        for a, b in self.sc.isolates:
            iso[a:b] = b"\x01" * (b - a)
        self.iso = bytes(iso)
        # The text outside isolates, every other character a NUL (neither a space nor a letter).
        keep = (as_int(self.mask) & ~as_int(self.iso)).to_bytes(n, "big")
        parts, last = [], 0
        for m in re.finditer(rb"\x00+", keep):
            parts += [src[last:m.start()], "\x00" * (m.end() - m.start())]
            last = m.end()
        parts.append(src[last:])
        self.free_text = "".join(parts)

    def is_display(self, a: int, b: int) -> bool:
        return b - a >= 3 and self.src[a + 1] in " \n\t" and self.src[b - 2] in " \n\t"

    def text_at(self, i: int) -> bool:
        """Markup text (escapes included): what a regex show rule of style.typ sees."""
        return bool(self.mask[i])

    def isolated(self, i: int) -> bool:
        return bool(self.iso[i])

    def markup_after(self, end: int) -> str:
        """The markup text right after offset `end`, up to the next non-markup character."""
        stops = [j for j in (self.mask.find(b"\x00", end), self.src.find("\n", end)) if j >= 0]
        return self.src[end:min(stops, default=len(self.src))]


def split_assignments(doc: _Doc) -> list[tuple[int, str]]:
    found = []
    for a, b in doc.inline_maths:
        body = doc.src[a + 1:b - 1]
        after = doc.markup_after(b)
        if _RELATION_END.search(body) and _NUMBER_START.match(after):
            found.append((a, doc.src[a:b] + after[:12]))
        elif _RELATION_THEN_NUMBER.match(after):
            found.append((a, doc.src[a:b] + after[:12]))
    return found


def _closing_paren(src: str, i: int, limit: int = 300) -> int | None:
    depth = 0
    for j in range(i, min(len(src), i + limit)):
        c = src[j]
        if c == "\\":
            continue
        if c == "(" and (j == 0 or src[j - 1] != "\\"):
            depth += 1
        elif c == ")" and (j == 0 or src[j - 1] != "\\"):
            depth -= 1
            if depth == 0:
                return j
        elif c == "\n" and src.startswith("\n", j + 1):
            return None  # a paragraph break: no gloss spans it
    return None


def _plain_text_run(doc: _Doc, a: int, b: int) -> bool:
    """Whether src[a:b] is one run of text for a regex show rule: markup and escapes only, no emphasis."""
    for k in range(a, b):
        if not doc.text_at(k) and doc.src[k] not in " \n":
            return False
        if doc.sc.markup[k] and doc.src[k] in "*_~" and not doc.sc.escaped[k]:
            return False
    return True


def loose_glosses(doc: _Doc, patterns: dict[str, re.Pattern]) -> list[tuple[int, str]]:
    """Parenthesised English runs the gloss show rule cannot catch whole, outside `#en[…]`."""
    src, found = doc.src, []
    for m in re.finditer(r"\(", src):
        i = m.start()
        if not doc.sc.markup[i] or doc.sc.escaped[i] or doc.isolated(i):
            continue
        prev = src[i - 1] if i else " "
        if _LATIN.match(prev) or prev.isdigit():
            continue  # a call: latin_runs' business
        k = i + 1
        while k < len(src) and (src[k] == "\\" or (doc.sc.escaped[k] and not src[k].isalpha())):
            k += 1
        if k >= len(src) or not _LATIN.match(src[k]) or not doc.text_at(k):
            continue
        end = _closing_paren(src, i)
        if end is None:
            continue
        inside = src[i:end + 1]
        if _ARABIC_LETTER.search(doc_text(doc, i, end + 1)):
            continue  # a Persian parenthesis that happens to start with an English word
        if _plain_text_run(doc, i, end + 1) and patterns["gloss"].search(" " + unescape(inside)):
            continue
        found.append((i, inside))
    return found


def doc_text(doc: _Doc, a: int, b: int) -> str:
    """The markup text of src[a:b] (code, math and raw removed)."""
    return "".join(ch for k, ch in enumerate(doc.src[a:b], a) if doc.text_at(k))


def unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def latin_runs(doc: _Doc, patterns: dict[str, re.Pattern]) -> list[tuple[int, str]]:
    """Latin with punctuation at an edge that no show rule isolates (outside `#en[…]` and code)."""
    src, spans = doc.src, []  # (start, end) of each defect
    for a, b in sorted(doc.inline_maths + doc.sc.raws):
        if doc.isolated(a):
            continue
        after = doc.markup_after(b)
        before_start = a
        while before_start > 0 and doc.text_at(before_start - 1) and src[before_start - 1] not in " \n":
            before_start -= 1
        before = src[before_start:a]
        glued_after = _GLUED_AFTER.match(after)
        if glued_after:
            spans.append((a, b + glued_after.end()))
        elif before and _GLUED_BEFORE.search(unescape(before)) and _LATIN.search(before):
            spans.append((before_start, b))
    for m in _CALL.finditer(src):
        if not doc.text_at(m.start()) or doc.isolated(m.start()):
            continue
        end = _closing_paren(src, m.end() - 1)
        if end is not None and not _plain_text_run(doc, m.start(), end + 1):
            spans.append((m.start(), end + 1))
    text = doc.free_text
    for rx in (_LEADING, _TRAILING):
        for m in rx.finditer(text):
            word_end = m.start()
            while word_end < len(text) and text[word_end] not in " \n\x00":
                word_end += 1
            spans.append((m.start(), word_end))
    spans = sorted(set(spans))
    outer = [(a, b) for a, b in spans if not any(c <= a and b <= d and (c, d) != (a, b) for c, d in spans)]
    return [(a, src[a:b]) for a, b in outer]


def long_inline_maths(doc: _Doc, limit: int = INLINE_MATH_LIMIT) -> list[tuple[int, str, int]]:
    out = []
    for a, b in doc.inline_maths:
        n = math_symbols(doc.src[a + 1:b - 1])
        if n > limit:
            out.append((a, doc.src[a:b], n))
    return out


def persian_inline_maths(doc: _Doc) -> list[tuple[int, str]]:
    return [(a, doc.src[a:b]) for a, b in doc.inline_maths if _ARABIC_LETTER.search(doc.src[a:b])]


def typography_findings(src: str, style_path: Path, scanned: object | None = None) -> list:
    """Every source finding of this module on the rendered report `src`."""
    from tamrin.report.checks import Finding

    doc = _Doc(src, scanned)
    patterns = show_rule_patterns(str(style_path))
    findings = []
    for off, text in split_assignments(doc):
        findings.append(Finding("split-assignment", f"report.typ:{_line(src, off)}",
                                f"«{_snippet(text)}»: the symbol is math and its value text, so they swap sides in a "
                                "right-to-left line; write the assignment as one formula, ⟦ x | eq(\"h\") ⟧"))
    for off, text in loose_glosses(doc, patterns):
        findings.append(Finding("gloss-unit", f"report.typ:{_line(src, off)}",
                                f"«{_snippet(text)}» is not one unit: a reference, math, code or emphasis inside stops "
                                "the gloss show rule, so across a line end its words and parentheses read out of "
                                "order; move that out of the parentheses or wrap the whole run in #en[…]"))
    for off, text in latin_runs(doc, patterns):
        findings.append(Finding("latin-isolate", f"report.typ:{_line(src, off)}",
                                f"«{_snippet(text)}»: Latin with punctuation at its edge outside an isolate; the "
                                "right-to-left line moves the punctuation to the other end: wrap it in #en[…]"))
    for off, text, n in long_inline_maths(doc):
        findings.append(Finding("inline-math", f"report.typ:{_line(src, off)}",
                                f"inline formula of {n} symbols (limit {INLINE_MATH_LIMIT}), «{_snippet(text)}»: inline "
                                "formulas never break, so a long one overflows its line; make it a display equation"))
    for off, text in persian_inline_maths(doc):
        findings.append(Finding("inline-math", f"report.typ:{_line(src, off)}",
                                f"Persian words inside the inline formula «{_snippet(text)}»: Typst lays it out right to "
                                "left, so its parts read in the wrong order; write the words in the prose"))
    return findings


def source_lints(templates_dir: Path, rendered: list[str]) -> list[Finding]:
    """The lints of the template sources and their rendered output that do not depend on the results: typed
    numbers and open markers in every template, an answer heading for every question, and the typography rules
    on each rendered document. The tests run them on the fixture render (the build does not)."""
    from tamrin.report.checks import lint_template_source

    findings = [f for path in sorted(templates_dir.rglob("*.typ.j2"))
                for f in lint_template_source(f"templates/{path.relative_to(templates_dir).as_posix()}",
                                              path.read_text(encoding="utf-8"))]
    style = templates_dir / "style.typ"
    if style.exists():
        findings += lint_template_source("templates/style.typ", style.read_text(encoding="utf-8"), digits=False)
    findings += coverage_findings(templates_dir)
    for source in rendered:
        findings += typography_findings(source, templates_dir / "style.typ")
    return findings


def coverage_findings(templates: Path) -> list:
    """One finding per question whose section template exists but has no answer heading labelled for it (a
    section template that does not exist at all is shown as «not written yet», its questions unanswered)."""
    from tamrin.report.checks import Finding
    from tamrin.report.context import QUESTIONS, answered

    done = answered(templates)
    return [Finding("coverage", f"templates/sections/{q.section}.typ.j2",
                    f"question {q.id} ({q.points:g} points) has no answer: add its heading with the label <{q.label}> "
                    f"(e.g. `=== سوال …: … <{q.label}>`), see templates/README.md")
            for q in QUESTIONS if (templates / "sections" / f"{q.section}.typ.j2").is_file() and not done[q.id]]
