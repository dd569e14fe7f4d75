"""The glyphs of a Typst PDF with their positions, read from the page content streams (pypdf parses them).

What Typst writes and this module relies on (Typst 0.14+, tagged PDF): every shaped text item is one
`BT … ET` block, and the items of a page follow each other in *logical* order (the order of the source text, the
order the structure tree reads them in); a right-to-left item marks its glyphs `/ReversedChars`, i.e. they are
written in visual order. Fonts are Type0 / Identity-H with a ToUnicode map and a /W width array, so each glyph's
character and advance are known. Paths (table rules, boxes) and images are kept as bounding boxes.
Coordinates are PDF points with y growing upwards, as in the file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pypdf


@dataclass(frozen=True)
class Glyph:
    ch: str  # the text the glyph stands for (ToUnicode), usually one character
    x0: float
    x1: float
    y: float  # baseline
    size: float
    item: int  # index of its text item (BT … ET block) on the page, in stream (logical) order
    reversed: bool  # written right to left (its item is a right-to-left run)
    bold: bool
    color: tuple = ()
    math: bool = False  # drawn in the math font


@dataclass(frozen=True)
class Box:
    x0: float
    y0: float
    x1: float
    y1: float
    kind: str  # "stroke", "fill" or "image"


@dataclass
class Page:
    index: int  # 0-based
    label: str
    width: float
    height: float
    glyphs: list[Glyph] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    links: list[tuple[tuple[float, float, float, float], int | None]] = field(default_factory=list)  # rect, dest page


def _mul(a: tuple, b: tuple) -> tuple:
    """a × b for PDF matrices (a, b, c, d, e, f)."""
    return (a[0] * b[0] + a[1] * b[2], a[0] * b[1] + a[1] * b[3],
            a[2] * b[0] + a[3] * b[2], a[2] * b[1] + a[3] * b[3],
            a[4] * b[0] + a[5] * b[2] + b[4], a[4] * b[1] + a[5] * b[3] + b[5])


def _apply(m: tuple, x: float, y: float) -> tuple[float, float]:
    return x * m[0] + y * m[2] + m[4], x * m[1] + y * m[3] + m[5]


_BF_CHAR = re.compile(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>")
_BF_RANGE = re.compile(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>")


def _utf16(hexstr: bytes) -> str:
    return bytes.fromhex(hexstr.decode()).decode("utf-16-be", errors="replace")


@dataclass
class _Font:
    to_unicode: dict[int, str]
    widths: dict[int, float]
    default_width: float
    bold: bool
    math: bool


def _font(obj: Any) -> _Font:
    f = obj.get_object()
    cmap: dict[int, str] = {}
    if "/ToUnicode" in f:
        data = f["/ToUnicode"].get_object().get_data()
        for block in re.findall(rb"beginbfrange(.*?)endbfrange", data, re.S):
            for a, b, dst in _BF_RANGE.findall(block):
                start, end, base = int(a, 16), int(b, 16), _utf16(dst)
                for k in range(end - start + 1):
                    cmap[start + k] = base[:-1] + chr(ord(base[-1]) + k) if base else ""
        for block in re.findall(rb"beginbfchar(.*?)endbfchar", data, re.S):
            for a, dst in _BF_CHAR.findall(block):
                cmap[int(a, 16)] = _utf16(dst)
    widths: dict[int, float] = {}
    dw = 1000.0
    desc = f.get("/DescendantFonts")
    if desc:
        d = desc[0].get_object()
        dw = float(d.get("/DW", 1000))
        w = list(d.get("/W", []))
        i = 0
        while i < len(w):
            first = int(w[i])
            nxt = w[i + 1]
            if isinstance(nxt, (list, pypdf.generic.ArrayObject)):
                for k, v in enumerate(nxt):
                    widths[first + k] = float(v)
                i += 2
            else:
                for c in range(first, int(nxt) + 1):
                    widths[c] = float(w[i + 2])
                i += 3
    name = str(f.get("/BaseFont", ""))
    return _Font(cmap, widths, dw, "Bold" in name, "Math" in name)


_TOKEN = re.compile(rb"""
    (?P<ws>[ \t\r\n\f\x00]+|%[^\r\n]*)
  | (?P<num>[+-]?(?:\d+\.?\d*|\.\d+))
  | (?P<name>/[^ \t\r\n\f\x00()<>\[\]{}/%]*)
  | (?P<str>\((?:\\.|[^\\)])*\))
  | (?P<hex><[0-9A-Fa-f\s]*>)
  | (?P<open>\[|<<)
  | (?P<close>\]|>>)
  | (?P<op>[A-Za-z'"*]+[0-9]?\*?)
""", re.X | re.S)
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f"}


def _string(lit: bytes) -> bytes:
    """A PDF literal string's bytes (backslash escapes resolved; Typst writes no nested parentheses)."""
    body = lit[1:-1]
    if b"\\" not in body:
        return body
    out, i = bytearray(), 0
    while i < len(body):
        c = body[i:i + 1]
        if c != b"\\":
            out += c
            i += 1
            continue
        nxt = body[i + 1:i + 2]
        if nxt in _ESCAPES:
            out += _ESCAPES[nxt]
            i += 2
        elif nxt.isdigit():
            j = i + 1
            while j < len(body) and j < i + 4 and body[j:j + 1].isdigit():
                j += 1
            out.append(int(body[i + 1:j], 8) & 0xFF)
            i = j
        elif nxt in (b"\r", b"\n"):
            i += 2
        else:
            out += nxt
            i += 2
    return bytes(out)


def _operations(data: bytes):
    """(operands, operator) of a content stream: numbers as float, names as str, strings as bytes, arrays as
    lists, dictionaries as lists of their items (their content is not needed here)."""
    operands: list = []
    stack: list[list] = []
    for m in _TOKEN.finditer(data):
        kind = m.lastgroup
        if kind == "ws":
            continue
        tok = m.group()
        if kind == "num":
            val: Any = float(tok)
        elif kind == "name":
            val = tok.decode("latin-1")
        elif kind == "str":
            val = _string(tok)
        elif kind == "hex":
            val = bytes.fromhex(re.sub(rb"\s", b"", tok[1:-1]).decode())
        elif kind == "open":
            stack.append(operands)
            operands = []
            continue
        elif kind == "close":
            val = operands
            operands = stack.pop() if stack else []
        else:
            if stack:  # an operator-like word inside an array or dictionary (true, false, null)
                operands.append(tok)
                continue
            yield operands, tok
            operands = []
            continue
        operands.append(val)


def _page_glyphs(page: Any, reader: pypdf.PdfReader, out: Page) -> None:
    fonts_res = page.get("/Resources", {}).get("/Font", {}) or {}
    xobjects = page.get("/Resources", {}).get("/XObject", {}) or {}
    fonts: dict[str, _Font] = {}
    contents = page.get_contents()
    if contents is None:
        return
    ops = _operations(contents.get_data())
    ctm = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)
    stack: list[tuple] = []
    tm = ctm
    font: _Font | None = None
    size = 0.0
    marks: list[bool] = []  # marked-content stack: True where /ReversedChars
    item = -1
    color: tuple = ()
    path: list[tuple[float, float]] = []
    for operands, op in ops:
        if op == b"q":
            stack.append((ctm, color))
        elif op == b"Q":
            if stack:
                ctm, color = stack.pop()
        elif op == b"cm":
            ctm = _mul(tuple(float(v) for v in operands), ctm)
        elif op in (b"scn", b"sc", b"rg", b"g"):
            color = tuple(round(v, 3) for v in operands if isinstance(v, float))
        elif op == b"BT":
            tm = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)
            item += 1
        elif op == b"Tf":
            key = operands[0]
            if key not in fonts and key in fonts_res:
                fonts[key] = _font(fonts_res[key])
            font, size = fonts.get(key), float(operands[1])
        elif op == b"Tm":
            tm = tuple(float(v) for v in operands)
        elif op in (b"BMC", b"BDC"):
            marks.append(operands[0] == "/ReversedChars")
        elif op == b"EMC":
            if marks:
                marks.pop()
        elif op in (b"TJ", b"Tj") and font is not None:
            parts = operands[0] if op == b"TJ" else [operands[0]]
            rev = any(marks)
            tx = 0.0
            for part in parts:
                if isinstance(part, float):
                    tx -= part / 1000 * size
                    continue
                if not isinstance(part, bytes):
                    continue
                data = part
                for k in range(0, len(data) - 1, 2):
                    cid = data[k] << 8 | data[k + 1]
                    adv = font.widths.get(cid, font.default_width) / 1000 * size
                    m = _mul(tm, ctm)
                    xa, ya = _apply(m, tx, 0)
                    xb, _ = _apply(m, tx + adv, 0)
                    out.glyphs.append(Glyph(font.to_unicode.get(cid, ""), min(xa, xb), max(xa, xb), ya,
                                            size * abs(m[3]) if m[3] else size, item, rev, font.bold, color, font.math))
                    tx += adv
        elif op == b"re":
            x, y, w, h = (float(v) for v in operands)
            path += [(x, y), (x + w, y + h)]
        elif op in (b"m", b"l"):
            path.append((float(operands[0]), float(operands[1])))
        elif op in (b"c", b"v", b"y"):
            path.append((float(operands[-2]), float(operands[-1])))
        elif op in (b"S", b"s", b"f", b"f*", b"F", b"B", b"B*", b"b", b"b*", b"n"):
            if path and op != b"n":
                pts = [_apply(ctm, x, y) for x, y in path]
                xs, ys = [p[0] for p in pts], [p[1] for p in pts]
                out.boxes.append(Box(min(xs), min(ys), max(xs), max(ys), "stroke" if op in (b"S", b"s") else "fill"))
            path = []
        elif op == b"Do":
            name = operands[0]
            xo = xobjects.get(name)
            if xo is not None and xo.get_object().get("/Subtype") == "/Image":
                pts = [_apply(ctm, x, y) for x, y in ((0, 0), (1, 1))]
                out.boxes.append(Box(min(p[0] for p in pts), min(p[1] for p in pts),
                                     max(p[0] for p in pts), max(p[1] for p in pts), "image"))
            elif xo is not None:  # a form (a vector figure): its bounding box is content
                bbox = [float(v) for v in xo.get_object().get("/BBox", [0, 0, 0, 0])]
                fm = tuple(float(v) for v in xo.get_object().get("/Matrix", [1, 0, 0, 1, 0, 0]))
                m = _mul(fm, ctm)
                pts = [_apply(m, bbox[0], bbox[1]), _apply(m, bbox[2], bbox[3])]
                out.boxes.append(Box(min(p[0] for p in pts), min(p[1] for p in pts),
                                     max(p[0] for p in pts), max(p[1] for p in pts), "image"))


def read_pdf(pdf: bytes | str) -> list[Page]:
    """Every page of a PDF (bytes or a path) with its glyphs, boxes and internal links."""
    import io

    reader = pypdf.PdfReader(io.BytesIO(pdf) if isinstance(pdf, (bytes, bytearray)) else str(pdf))
    labels = reader.page_labels
    page_ids = {p.indirect_reference.idnum: i for i, p in enumerate(reader.pages) if p.indirect_reference}
    pages = []
    for i, p in enumerate(reader.pages):
        box = p.mediabox
        page = Page(i, labels[i] if i < len(labels) else str(i + 1), float(box.width), float(box.height))
        _page_glyphs(p, reader, page)
        for annot in p.get("/Annots", []) or []:
            a = annot.get_object()
            if a.get("/Subtype") != "/Link":
                continue
            dest = a.get("/Dest")
            target = None
            if dest is not None:
                dest = dest.get_object()
                if isinstance(dest, (list, pypdf.generic.ArrayObject)) and dest:
                    ref = dest[0]
                    target = page_ids.get(getattr(ref, "idnum", None))
            rect = tuple(float(v) for v in a["/Rect"])
            page.links.append((rect, target))
        pages.append(page)
    return pages
