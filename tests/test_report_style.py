"""templates/style.typ on its own: inline code inside Persian (right-to-left) text keeps its characters in
order — neutral characters at the end of a code span ("…", "·))") must not be moved by the bidi algorithm."""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import pypdf
import typst

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
CODE_SPANS = ["cancel(together(·))", "results/…", "x = f(y)…", "(a, b)."]


def visual_lines(pdf: bytes) -> list[str]:
    """The text of page 1 line by line, each line's runs joined in visual left-to-right order (a run of
    Persian keeps its logical order inside, but a left-to-right span reads as written only if it is intact)."""
    lines: dict[int, list[tuple[float, str]]] = {}

    def visit(text, cm, tm, font_dict, font_size):
        if text.strip():
            x, y = tm[4] * cm[0] + cm[4], tm[5] * cm[3] + cm[5]
            lines.setdefault(round(y), []).append((x, text))

    pypdf.PdfReader(io.BytesIO(pdf)).pages[0].extract_text(visitor_text=visit)
    return ["".join(t for _, t in sorted(runs)) for _, runs in sorted(lines.items(), reverse=True)]


def test_inline_code_in_persian_text_keeps_its_order(tmp_path):
    shutil.copyfile(TEMPLATES / "style.typ", tmp_path / "style.typ")
    spans = "، ".join(f"`{c}`" for c in CODE_SPANS)
    (tmp_path / "doc.typ").write_text('#import "style.typ": *\n#show: setup\n'
                                      f"ساده‌سازی با کد {spans} در متن فارسی.\n", encoding="utf-8")
    pdf = typst.compile(str(tmp_path / "doc.typ"), font_paths=[str(TEMPLATES / "fonts")])
    lines = visual_lines(pdf)
    for code in CODE_SPANS:
        assert any(code in line for line in lines), f"{code!r} was reordered: {lines}"
