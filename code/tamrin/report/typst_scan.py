"""Which characters of a Typst source are *markup* (prose) and which are code, math, raw text, strings, comments,
labels or references, close enough to Typst's syntax for the templates: `#` starts one embedded code expression
(an identifier with `.field`, `(args)` and `[content]` suffixes; `let`/`set`/`show`/`if`/`for`/… statements run to
the end of the line outside brackets); `[...]` inside code is markup again; `$...$` is math; backticks are raw;
`//` and `/* */` are comments; `\\x` is an escape.
"""
from __future__ import annotations

import re

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
# A run of markup characters none of which can start anything else (escape, comment, raw, math, code, label,
# reference, bracket): `markup_until` takes such a run in one step instead of character by character.
_PLAIN = re.compile(r"[^\\/`$#<@\[\]]+")
_LABEL = re.compile(r"<([A-Za-z_][A-Za-z0-9_:.-]*)>")
_REF = re.compile(r"@([A-Za-z_][A-Za-z0-9_:.-]*[A-Za-z0-9_])")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_MATH = re.compile(r'\$(?:[^$"\\]|\\.|"(?:[^"\\]|\\.)*")*\$', re.S)
_NON_MARKUP = re.compile(rb"\x00+")
_ISOLATE_MARK = re.compile("[\u2066\u2069]")
_NOT_NEWLINE = re.compile(r"[^\n]")
_STATEMENTS = {"let", "set", "show", "import", "include", "return", "if", "for", "while", "context",
               "break", "continue"}
# Functions of style.typ whose content argument is one left-to-right isolate (`#en[…]`).
ISOLATING = {"en", "gloss"}


class _Scanner:
    def __init__(self, src: str) -> None:
        self.s = src
        self.n = len(src)
        self.markup = bytearray(self.n)  # 1 where the character is markup text
        self.labels: list[tuple[int, str]] = []
        self.refs: list[tuple[int, str]] = []
        self.maths: list[tuple[int, int]] = []  # (start, end) of each $…$, delimiters included
        self.raws: list[tuple[int, int]] = []  # (start, end) of each `…` span, backticks included
        self.escaped = bytearray(self.n)  # 1 on both characters of a markup escape such as `\-`
        self.isolates: list[tuple[int, int]] = []  # (start, end) of the content of each `en[…]`

    def skip_comment(self, i: int) -> int:
        """The end of the `//` or `/* */` comment at i."""
        if self.s.startswith("//", i):
            j = self.s.find("\n", i)
            return self.n if j < 0 else j
        j = self.s.find("*/", i + 2)
        return self.n if j < 0 else j + 2

    def skip_raw(self, i: int) -> int:
        s = self.s
        j = i
        while j < self.n and s[j] == "`":
            j += 1
        ticks = j - i
        if ticks == 2:
            return j
        end = s.find("`" * ticks, j)
        end = self.n if end < 0 else end + ticks
        self.raws.append((i, end))
        return end

    def skip_math(self, i: int) -> int:
        m = _MATH.match(self.s, i)
        end = m.end() if m else self.n  # an unclosed formula (or string inside it) runs to the end
        self.maths.append((i, end))
        return end

    def skip_string(self, i: int) -> int:
        m = _STRING.match(self.s, i)
        return m.end() if m else self.n

    def markup_until(self, i: int, close: str | None) -> int:
        """Scan markup from i until an unmatched `close` (']' for a content block, None for the file)."""
        s = self.s
        depth = 0
        plain = _PLAIN.match
        while i < self.n:
            m = plain(s, i)
            if m:
                j = m.end()
                self.markup[i:j] = b"\x01" * (j - i)
                i = j
                if i >= self.n:
                    break
            c = s[i]
            if c == "\\":
                if s.startswith("u{", i + 1):
                    j = s.find("}", i)
                    i = self.n if j < 0 else j + 1
                else:
                    self.escaped[i:i + 2] = b"\x01\x01"[: max(0, min(2, self.n - i))]
                    i += 2
                continue
            if s.startswith("//", i) or s.startswith("/*", i):
                i = self.skip_comment(i)
                continue
            if c == "`":
                i = self.skip_raw(i)
                continue
            if c == "$":
                i = self.skip_math(i)
                continue
            if c == "#" and i + 1 < self.n and (s[i + 1].isalpha() or s[i + 1] in "_([{\""):
                i = self.code_expression(i + 1)
                continue
            m = (_LABEL if c == "<" else _REF).match(s, i) if c in "<@" else None
            if m:
                (self.labels if c == "<" else self.refs).append((i, m.group(1)))
                i = m.end()
                continue
            if close is not None:
                if c == "[":
                    depth += 1
                elif c == "]":
                    if depth == 0:
                        return i + 1
                    depth -= 1
            self.markup[i] = 1
            i += 1
        return i

    def markup_text(self) -> str:
        """The source with every non-markup character a space (newlines kept, so offsets and line numbers stay)."""
        out, s, i = [], self.s, 0
        for m in _NON_MARKUP.finditer(self.markup):
            out.append(s[i:m.start()])
            out.append(_NOT_NEWLINE.sub(" ", s[m.start():m.end()]))
            i = m.end()
        out.append(s[i:])
        return "".join(out)

    def code_until(self, i: int, close: str) -> int:
        """Scan code from i until the unmatched `close` (')' or '}'); returns the index after it."""
        s = self.s
        while i < self.n:
            c = s[i]
            if c == close:
                return i + 1
            i = self.code_token(i)
        return i

    def code_token(self, i: int) -> int:
        """Skip one token of code, recursing into groups; returns the index after it."""
        s = self.s
        c = s[i]
        if s.startswith("//", i) or s.startswith("/*", i):
            return self.skip_comment(i)
        if c == '"':
            return self.skip_string(i)
        if c == "$":
            return self.skip_math(i)
        if c == "`":
            return self.skip_raw(i)
        if c == "(":
            return self.code_until(i + 1, ")")
        if c == "{":
            return self.code_until(i + 1, "}")
        if c == "[":
            return self.content_block(i)
        if c == "<":
            m = _LABEL.match(s, i)
            if m:
                self.labels.append((i, m.group(1)))
                return m.end()
        if c.isalpha() or c == "_":
            m = _IDENT.match(s, i)
            if m:
                return m.end()
        return i + 1

    def content_block(self, i: int) -> int:
        """`[…]` at i (code position); recorded as an isolate when it is the argument of an ISOLATING function."""
        m = re.search(r"([A-Za-z_][A-Za-z0-9_-]*)\s*$", self.s[max(0, i - 40):i])
        end = self.markup_until(i + 1, "]")
        if m and m.group(1) in ISOLATING:
            self.isolates.append((i + 1, end - 1))
        return end

    def code_expression(self, i: int) -> int:
        """An expression embedded in markup after `#`."""
        s = self.s
        m = _IDENT.match(s, i)
        if m and m.group(0) in _STATEMENTS:
            # A statement: code up to the end of the line, groups (possibly multi-line) included.
            i = m.end()
            while i < self.n and s[i] != "\n":
                if s[i] == ";":
                    return i + 1
                i = self.code_token(i)
            return i
        if m:
            i = m.end()
        elif s[i] in "([{\"":
            i = self.code_token(i)
        # Postfix chain: .field, (args), [content]
        while i < self.n:
            if s[i] == "(":
                i = self.code_until(i + 1, ")")
            elif s[i] == "[":
                i = self.content_block(i)
            elif s[i] == "." and i + 1 < self.n and (s[i + 1].isalpha() or s[i + 1] == "_"):
                m = _IDENT.match(s, i + 1)
                i = m.end() if m else i + 1
            else:
                break
        return i


def scan(src: str) -> _Scanner:
    sc = _Scanner(src)
    sc.markup_until(0, None)
    # Isolates typed as characters (U+2066 … U+2069, what report/bidi.py writes) count like `#en[…]`.
    opened: list[int] = []
    for m in _ISOLATE_MARK.finditer(src):
        if m.group() == "\u2066":
            opened.append(m.end())
        elif opened:
            sc.isolates.append((opened.pop(), m.start()))
    return sc

