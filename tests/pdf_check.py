"""What a reader sees on the compiled report: a check of the PDF itself, from glyph positions (pdf_glyphs).

Source lints cannot see the bidi algorithm, line breaking or page layout; this reads them back. Findings, each
with its page (the printed page label) and text:
- `order`: on a line of Persian text, the order a Persian reader gets differs from the logical order. The logical
  order comes from the PDF: Typst writes a page's text items in source order (tagged PDF) and marks right-to-left
  items `/ReversedChars`. The reader's order is modelled from positions alone: right to left, except that a run of
  Latin (from a left-to-right letter to the last one before anything Arabic-script, «،» included) is read left to
  right, and a number or a formula is one word. Spaces and brackets (whose shape depends on an embedding level the
  PDF does not record) are left out of the comparison; a formula counts as one mark. «حافظهٔ QLoRA ۵٫۰۹» drawn
  «حافظهٔ ۵٫۰۹ QLoRA» (rule W7) is read «حافظهٔ ۵٫۰۹ QLoRA».
- `gloss-split`: a gloss «(English words)» that starts on one line and ends on the next.
- `run-in-split`: a bold run-in title that is not at the right end of its line (the body's first word drawn to
  its right, «CLIP. CLIP»).
- `underfull`: a page whose content ends above 60% of the type area, except the cover, the last page, and a
  page before a level-1 heading.
- `outside`: text outside the type area (the page-number footer excepted) or across a table rule.
- `list-page`: an entry of the list of figures or tables whose page differs from the page its float lands on.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from pdf_glyphs import Glyph, Page, read_pdf

CM = 72 / 2.54
FILL_MIN = 0.60  # of the type area's height
LEVEL1_SIZE = 15.0  # pt: a level-1 heading (style.typ: 16 pt); lines of this size open a chapter
LINK_COLOR = (0.122, 0.373, 0.659)  # style.typ's accent: references and citations, left out of the order check
LINE_GAP = 9.0  # pt: a wider horizontal gap between glyphs on one baseline separates two lines (table cells)
# Left out of the comparison: invisible characters, and brackets — a bracket's shape depends on its embedding level,
# which the PDF does not record for one-glyph items, so a mirrored bracket cannot be told from a moved one.
_INVISIBLE = dict.fromkeys(map(ord, "\u2060\u200c\u200d\u200e\u200f\u061c\u2066\u2067\u2068\u2069\u202a\u202b\u202c"
                               "\u00a0 \t\n()[]{}<>«»‹›\u0650\u064e\u064f\u0651\u0652\u0654"))
_ARABIC_LETTER = re.compile(r"[\u0620-\u064a\u066e-\u06d3\u06d5\u06fa-\u06ff\ufb50-\ufdff\ufe70-\ufeff]")
_PERSIAN_DIGIT = re.compile(r"[\u06f0-\u06f9\u0660-\u0669]")
_GLOSS_OPEN = re.compile(r"\((?=[A-Za-z])[^()\u0600-\u06ff]*$")
_CAPTION = re.compile(r"^(شکل|جدول)[ \u00a0]([۰-۹]+):")
_ENTRY = re.compile(r"^(شکل|جدول)[ \u00a0]([۰-۹]+)")
_MARGIN = re.compile(r"#let page-margin = \(x: ([\d.]+)cm, top: ([\d.]+)cm, bottom: ([\d.]+)cm\)")


@dataclass(frozen=True)
class PdfFinding:
    kind: str
    page: str  # the printed page label
    text: str

    def line(self) -> str:
        return f"{self.kind}: page {self.page}: {self.text}"


@dataclass(frozen=True)
class Margins:
    x: float
    top: float
    bottom: float

    @classmethod
    def from_style(cls, style: Path) -> "Margins":
        m = _MARGIN.search(style.read_text(encoding="utf-8"))
        if m is None:
            raise ValueError(f"{style}: no `#let page-margin = (x: …cm, top: …cm, bottom: …cm)` to read the type area from")
        return cls(*(float(v) * CM for v in m.groups()))


# ------------------------------------------------------------------------------------------------ lines
def lines(page: Page) -> list[list[Glyph]]:
    """The glyphs of a page grouped into lines: one baseline (within 5.5 pt: sub- and superscripts join it), split
    where a horizontal gap is wider than LINE_GAP (table cells side by side). Top to bottom."""
    visible = [g for g in page.glyphs if g.x1 - g.x0 > 0.01 or g.ch.strip()]
    rows: list[list[Glyph]] = []
    for g in sorted(visible, key=lambda g: -g.y):
        if rows and abs(rows[-1][0].y - g.y) <= 5.5:
            rows[-1].append(g)
        else:
            rows.append([g])
    out = []
    for row in rows:
        row.sort(key=lambda g: g.x0)
        current = [row[0]]
        for g in row[1:]:
            if g.x0 - max(h.x1 for h in current[-3:]) > max(LINE_GAP, 1.2 * g.size):
                out.append(current)
                current = [g]
            else:
                current.append(g)
        out.append(current)
    return out


def _right_to_left(item: list[Glyph]) -> bool:
    """A right-to-left item: marked reversed, or one glyph that is not left-to-right (Typst marks no single glyph)."""
    return item[0].reversed or (len(item) == 1 and _kind(item[0].ch) in ("R", "n") and not item[0].math)


def logical_text(line: list[Glyph]) -> str:
    """The line in source order (see logical_glyphs)."""
    return "".join(g.ch for g in logical_glyphs(line))


def logical_glyphs(line: list[Glyph]) -> list[Glyph]:
    """The line's glyphs in source order: its items in stream order. Typst writes one right-to-left run split into
    several items (a font or style change inside it) in visual order, left to right, so consecutive right-to-left
    items are read together, right to left."""
    items: dict[int, list[Glyph]] = {}
    for g in line:
        items.setdefault(g.item, []).append(g)
    groups: list[tuple[bool, list[Glyph]]] = []
    for k in sorted(items):
        rtl = _right_to_left(items[k])
        if groups and rtl and groups[-1][0]:
            groups[-1][1].extend(items[k])
        else:
            groups.append((rtl, list(items[k])))
    return [g for rtl, gs in groups for g in sorted(gs, key=lambda g: g.x0, reverse=rtl)]


_ARABIC_PUNCT = "\u060c\u061b\u061f\u066b\u066c"  # ، ؛ ؟ and the Persian decimal and thousands separators
_TOUCH = 0.8  # pt: glyphs closer than this are one word
_NUMBER_GAP = 1.5  # pt: digits closer than this are one number (a space is 2.5 pt or more)
_MATH_GAP = 6.5  # pt: math glyphs closer than this are one formula (a thick math space and side bearings: ~4.5 pt)
_NUMBER_SEPARATORS = ".,:/\u066b\u066c"
_SENTENCE_MARKS = ".:;،؛•"  # never part of a formula they stand next to


def _kind(ch: str) -> str:
    """'L' (left to right), 'R' (Arabic script, its punctuation included: «،» tells a reader the line runs right to
    left), 'd' (a Persian digit) or 'n' (neutral)."""
    if not ch:
        return "n"
    c = ch[0]
    if _PERSIAN_DIGIT.match(c):
        return "d"
    if c in _ARABIC_PUNCT:
        return "R"
    bidi = unicodedata.bidirectional(c)
    if bidi in ("L", "EN") or (c.isascii() and c.isalnum()):
        return "L"
    if bidi in ("R", "AL"):
        return "R"
    return "n"


@dataclass
class _Unit:
    """A piece of a line as a reader takes it in: one glyph, or an atom read as one word (a number, a formula)."""
    kind: str  # L, R, n, or 'a' (an atom: a number or a formula, left to right inside, one word in the line)
    glyphs: list[Glyph]

    @property
    def x0(self) -> float:
        return self.glyphs[0].x0

    @property
    def x1(self) -> float:
        return self.glyphs[-1].x1


def _math_glyphs(line: list[Glyph]) -> set[int]:
    """ids of the glyphs of the line's formulas: math-font glyphs, and text set inside a formula ("Count", a
    grouped number, «=» from the text font) — a Latin glyph touching one, a neutral between two."""
    glyphs = sorted((g for g in line if g.ch.strip()), key=lambda g: g.x0)
    math = [g.math for g in glyphs]
    changed = True
    while changed:  # text set inside a formula ("Count", a grouped number, «=» from the text font) is part of it
        changed = False
        for k, g in enumerate(glyphs):
            if math[k] or _kind(g.ch) == "R" or _PERSIAN_DIGIT.match(g.ch[:1]):
                continue
            left = k > 0 and math[k - 1] and g.x0 - glyphs[k - 1].x1 < _MATH_GAP
            right = k + 1 < len(glyphs) and math[k + 1] and glyphs[k + 1].x0 - g.x1 < _MATH_GAP
            inner = (k + 1 < len(glyphs) and _kind(glyphs[k + 1].ch) == "L" and glyphs[k + 1].x0 - g.x1 < _TOUCH
                     and g.x0 - glyphs[k - 1].x1 < _NUMBER_GAP)  # $N$-gram
            touch_left = left and g.x0 - glyphs[k - 1].x1 < _NUMBER_GAP
            touch_right = right and glyphs[k + 1].x0 - g.x1 < _NUMBER_GAP
            if (_kind(g.ch) == "L" and (touch_left or touch_right)) \
                    or (left and (right or inner) and g.ch[:1] not in _SENTENCE_MARKS):
                math[k] = changed = True
    return {id(g) for g, m in zip(glyphs, math) if m}


def _units(line: list[Glyph]) -> list[_Unit]:
    """The line left to right as units: formulas (math glyphs that touch), Persian numbers, and ASCII numbers of
    an item without other ASCII (a citation's «2») are atoms; every other glyph is a unit of its own."""
    items: dict[int, list[Glyph]] = {}
    for g in line:
        items.setdefault(g.item, []).append(g)
    other_ascii = {k for k, gs in items.items() if any(g.ch[:1].isascii() and not g.ch[:1].isdigit() and g.ch.strip()
                                                       for g in gs)}
    glyphs = sorted((g for g in line if g.ch.strip()), key=lambda g: g.x0)  # spaces play no part in the order
    in_math = _math_glyphs(line)
    math = [id(g) in in_math for g in glyphs]
    out: list[_Unit] = []
    for g, is_math in zip(glyphs, math):
        c = g.ch[:1]
        prev = out[-1] if out else None
        if is_math:
            kind = "m"  # a formula, with the text set inside it
        elif _PERSIAN_DIGIT.match(c) or (c.isascii() and c.isdigit() and g.item not in other_ascii):
            kind = "#"
        elif c in _NUMBER_SEPARATORS and prev is not None and prev.kind == "#" and g.x0 - prev.x1 < _NUMBER_GAP:
            kind = "#"  # a separator between digits belongs to the number (bidi rule W4); a trailing one is cut below
        else:
            kind = _kind(g.ch)
        gap = _MATH_GAP if kind == "m" else _NUMBER_GAP
        if prev is not None and kind in ("m", "#") and prev.kind == kind and g.x0 - prev.x1 < gap:
            prev.glyphs.append(g)
        else:
            out.append(_Unit(kind, [g]))
    split: list[_Unit] = []
    for u in out:  # «۱۲.» at a sentence end: the number stops at its last digit
        tail = []
        while u.kind == "#" and len(u.glyphs) > 1 and u.glyphs[-1].ch[:1] in _NUMBER_SEPARATORS:
            tail.insert(0, _Unit(_kind(u.glyphs[-1].ch), [u.glyphs.pop()]))
        split += [u] + tail
    out = split
    for u in out:
        if u.kind in ("m", "#"):
            u.kind = "a"
    return out


def reading_text(line: list[Glyph]) -> str:
    """The line as a Persian reader reads it off the page (see reading_units)."""
    return "".join(g.ch for u in reading_units(line) for g in u.glyphs)


def _formula_text(glyphs: list[Glyph], math: set[int]) -> str:
    """Text with each formula one mark «∎»: the order inside a formula is the formula's own business (its items are
    not written in reading order), its place in the line is the check's."""
    out, prev_math = [], False
    for g in glyphs:
        if not g.ch.strip():
            continue
        if id(g) in math:
            if not prev_math:
                out.append("∎")
            prev_math = True
        else:
            out.append(g.ch)
            prev_math = False
    return "".join(out)


def reading_units(line: list[Glyph]) -> list["_Unit"]:
    """The line as a Persian reader reads it off the page (see the module doc): right to left, a Latin run left
    to right — from a left-to-right glyph to the last one before anything Arabic-script or an atom, with a formula
    touching it and the neutrals at its edges that belong to its own (left-to-right) item."""
    units = _units(line)[::-1]  # right to left
    n = len(units)
    i = 0
    while i < n:
        if units[i].kind != "L":
            i += 1
            continue
        j, last = i, i
        while j < n and units[j].kind != "R":
            u = units[j]
            if u.kind == "L":
                last = j
            elif u.kind == "a":  # a formula glued to the run ($N$-gram) is part of it; a number is not
                before = units[j - 1]
                glued = before.kind == "L" or (before.kind == "n" and j - 2 >= i and units[j - 2].kind == "L"
                                               and units[j - 2].glyphs[0].item == before.glyphs[0].item)
                if not (u.glyphs[0].math and before.x0 - u.x1 < _TOUCH and glued):
                    break
                last = j
            elif any(g.reversed for g in u.glyphs):
                break  # a bracket or mark drawn right to left between two runs: two isolates, read right to left
            j += 1
        start = i
        # Before (to the right of) the run: neutrals of its own left-to-right item, and a formula glued to them
        # («FP32 (12P)» set as one isolate reads from its left end).
        while start > 0:
            u, edge = units[start - 1], units[start].glyphs[0]
            if u.kind == "n" and u.glyphs[0].item == edge.item and not edge.reversed:
                start -= 1
            elif u.kind == "a" and u.glyphs[0].math and u.x0 - units[start].x1 < _TOUCH and start < i:
                start -= 1
            else:
                break
        # After (to the left of) it: neutrals written in the same left-to-right item as its edge glyph.
        edge = units[last].glyphs[-1]
        while last + 1 < n and units[last + 1].kind == "n" and units[last + 1].glyphs[0].item == edge.item \
                and not edge.reversed:
            last += 1
        units[start:last + 1] = units[start:last + 1][::-1]
        i = last + 1
    return units


def _squash(text: str) -> str:
    return text.translate(_INVISIBLE)


def _snippet(text: str, limit: int = 90) -> str:
    text = " ".join(text.translate(dict.fromkeys(map(ord, "\u2060\u2066\u2067\u2068\u2069\u202a\u202b\u202c"))).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


# ------------------------------------------------------------------------------------------------ checks
def order_findings(page: Page) -> list[PdfFinding]:
    out = []
    for line in lines(page):
        line = [g for g in line if g.color != LINK_COLOR]
        logical = logical_text(line)
        if not _ARABIC_LETTER.search(logical) or sum(g.math for g in line) > len(line) / 2:
            continue  # a left-to-right line or a display formula: the reader model is for Persian lines
        math = _math_glyphs(line)
        reading = _formula_text([g for u in reading_units(line) for g in u.glyphs], math)
        if _squash(reading) != _squash(_formula_text(logical_glyphs(line), math)):
            reading = reading_text(line)
            out.append(PdfFinding("order", page.label, f"«{_snippet(logical)}» reads «{_snippet(reading)}»"))
    return out


def gloss_findings(page: Page) -> list[PdfFinding]:
    out = []
    for line in lines(page):
        logical = logical_text(line).translate(dict.fromkeys(map(ord, "\u2066\u2067\u2068\u2069\u202a\u202c")))
        if not _ARABIC_LETTER.search(logical):
            continue
        m = _GLOSS_OPEN.search(logical.rstrip())
        if m:
            out.append(PdfFinding("gloss-split", page.label, f"«{_snippet(m.group())}» ends the line «{_snippet(logical, 50)}»: "
                                  "the gloss goes on on the next line"))
    return out


def run_in_findings(page: Page) -> list[PdfFinding]:
    out = []
    for line in lines(page):
        items: dict[int, list[Glyph]] = {}
        for g in line:
            if g.ch.strip():
                items.setdefault(g.item, []).append(g)
        if not items:
            continue
        first = items[min(items)][0]
        if not first.bold or all(g.bold for g in line if g.ch.strip()) or not _ARABIC_LETTER.search(logical_text(line)):
            continue
        rightmost = max((g for g in line if g.ch.strip()), key=lambda g: g.x1)
        if not rightmost.bold:
            bold = "".join(g.ch for g in sorted((g for g in line if g.bold), key=lambda g: g.x0))
            out.append(PdfFinding("run-in-split", page.label, f"the run-in title «{_snippet(bold, 40)}» is not at the "
                                  f"start of its line «{_snippet(logical_text(line), 60)}»: body text is drawn before it"))
    return out


def _opens_chapter(page: Page, margins: Margins) -> bool:
    top = page.height - margins.top
    high = [g for g in page.glyphs if g.y > top - 60 and g.ch.strip()]
    return any(g.size >= LEVEL1_SIZE and g.bold for g in high)


def _content_bottom(page: Page, margins: Margins) -> float | None:
    ys = [g.y - 0.3 * g.size for g in page.glyphs if g.ch.strip() and g.y > margins.bottom]
    ys += [b.y0 for b in page.boxes if b.y0 > margins.bottom - 1 and b.y1 < page.height - margins.top + 1]
    return min(ys) if ys else None


def underfull_findings(pages: list[Page], margins: Margins, fill_min: float = FILL_MIN) -> list[PdfFinding]:
    out = []
    for i, page in enumerate(pages):
        if i == 0 or i == len(pages) - 1 or _opens_chapter(pages[i + 1], margins):
            continue
        top, bottom = page.height - margins.top, margins.bottom
        low = _content_bottom(page, margins)
        fill = 0.0 if low is None else (top - low) / (top - bottom)
        if fill < fill_min:
            out.append(PdfFinding("underfull", page.label, f"content fills {fill:.0%} of the type area (at least "
                                  f"{fill_min:.0%} expected on a page that does not end a chapter)"))
    return out


def outside_findings(page: Page, margins: Margins, first: bool = False) -> list[PdfFinding]:
    out = []
    left, right = margins.x - 1, page.width - margins.x + 1
    top, bottom = page.height - margins.top + 2, margins.bottom
    stray = []
    for g in page.glyphs:
        if not g.ch.strip():
            continue
        footer = g.y < bottom and abs((g.x0 + g.x1) / 2 - page.width / 2) < 40
        # Punctuation may hang into the margin by its own width (Typst's overhang); letters may not.
        hang = (g.x1 - g.x0) if _kind(g.ch) == "n" or g.ch[:1] in _ARABIC_PUNCT else 0.0
        if g.x0 < left - hang or g.x1 > right + hang or (not first and not footer and (g.y + 0.6 * g.size > top or g.y < bottom)):
            stray.append(g)
    if stray:
        text = "".join(g.ch for g in sorted(stray, key=lambda g: (-g.y, g.x0)))
        out.append(PdfFinding("outside", page.label, f"text outside the type area: «{_snippet(text, 60)}»"))
    lines_ = [b for b in page.boxes if b.kind == "stroke" and b.y1 - b.y0 < 0.5 and b.x1 - b.x0 > 20]
    # A table rule shares its horizontal extent with another rule of the table (a fraction bar stands alone).
    rules = [b for b in lines_ if sum(abs(o.x0 - b.x0) < 0.5 and abs(o.x1 - b.x1) < 0.5 for o in lines_) > 1]
    for rule in rules:
        crossing = [g for g in page.glyphs if g.ch.strip() and g.y - 0.15 * g.size < rule.y0 < g.y + 0.55 * g.size
                    and g.x0 < rule.x1 and g.x1 > rule.x0]
        if crossing:
            text = "".join(g.ch for g in sorted(crossing, key=lambda g: g.x0))
            out.append(PdfFinding("outside", page.label, f"text across a table rule: «{_snippet(text, 60)}»"))
    return out


def list_page_findings(pages: list[Page]) -> list[PdfFinding]:
    """Entries «شکل ۳ … ۱۲» of the lists against the page where «شکل ۳:» (its caption) is printed."""
    captions: dict[tuple[str, str], str] = {}
    entries: list[tuple[str, str, str, str]] = []  # kind, number, printed page, list page
    for page in pages:
        for line in lines(page):
            g0 = line[0]
            if any(r[1] - 1 <= g0.y <= r[3] + 1 and r[0] - 1 <= g0.x0 <= r[2] + 1 for r, _ in page.links):
                continue  # a list entry (a link), not a caption
            m = _CAPTION.match(logical_text(line).lstrip().translate(dict.fromkeys(map(ord, "\u2066\u2067\u2069"))))
            if m and (m.group(1), m.group(2)) not in captions:
                captions[(m.group(1), m.group(2))] = page.label
        for rect, target in page.links:
            inside = [g for g in page.glyphs if rect[1] - 1 <= g.y <= rect[3] + 1 and rect[0] - 1 <= g.x0 <= rect[2] + 1]
            text = logical_text(inside).translate(dict.fromkeys(map(ord, "\u2066\u2067\u2069")))
            m = _ENTRY.match(text.strip())
            if not m:
                continue
            digits = sorted((g for g in inside if _PERSIAN_DIGIT.match(g.ch or " ") or g.ch[:1].isdigit()),
                            key=lambda g: g.x0)
            number = []
            for g in digits:  # the page number: the leftmost run of digits
                if number and g.x0 - number[-1].x1 > 1.0:
                    break
                number.append(g)
            entries.append((m.group(1), m.group(2), "".join(g.ch for g in number), page.label))
    out = []
    for kind, num, printed, list_page in entries:
        actual = captions.get((kind, num))
        if actual is not None and actual != printed:
            out.append(PdfFinding("list-page", list_page, f"«{kind} {num}» is listed on page {printed} but lands on "
                                  f"page {actual}"))
    return out


def check_pdf(pdf: bytes | str | Path, margins: Margins) -> list[PdfFinding]:
    """Every finding of this module on a compiled report."""
    pages = read_pdf(pdf if isinstance(pdf, bytes) else str(pdf))
    out: list[PdfFinding] = []
    for i, page in enumerate(pages):
        out += order_findings(page) + gloss_findings(page) + run_in_findings(page)
        out += outside_findings(page, margins, first=(i == 0))
    out += underfull_findings(pages, margins) + list_page_findings(pages)
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="check a compiled report's PDF (order, glosses, run-in titles, "
                                             "underfull pages, overflow, list pages)")
    ap.add_argument("pdf", type=Path)
    ap.add_argument("--style", type=Path, default=Path(__file__).resolve().parents[1] / "templates" / "style.typ")
    args = ap.parse_args(argv)
    findings = check_pdf(args.pdf, Margins.from_style(args.style))
    for f in findings:
        print(f.line())
    print(f"{len(findings)} finding(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
