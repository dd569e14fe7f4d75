"""The report speaks about the student's work, not the tool that built it: a word list checked on the compiled
report's text (every page, after Typst has laid it out, so text from results and templates alike is seen).

Kept out of report.pdf: the tool's name, «پروفایل» and the profile names, stage names next to «مرحلهٔ», config
keys (`lora.scope`, `train.max_minutes`), command lines and options (`build.py`, `--set`), «commit», cache keys,
manifests and results paths. They belong in the supplement and the README.
"""
from __future__ import annotations

import re
from functools import lru_cache

from .lint import Finding

STAGE_NAMES = ("data", "finetune", "eval", "ablation", "memory", "derive", "flow")

FIXED: tuple[tuple[str, str], ...] = (
    (r"\bTamrin\b", "the tool's name"),
    (r"پروفایل|\bprofiles?\b", "a profile"),
    (r"\bdemo\b", "the demo profile's name"),
    (r"\bbuild\.py\b|\bmake (?:report|test)\b|\bpip install\b", "a command line"),
    (r"(?<![\w-])--[a-z][a-z-]+", "a command-line option"),
    (r"\bcommit\b", "a commit"),
    (r"\bcache[ _-]?keys?\b|کلید (?:کش|حافظ(?:هٔ|ٔه|ۀ) نهان)", "a cache key"),
    (r"\bmanifest(?:\.json)?\b", "a manifest"),
    (r"\bresults/", "a results path"),
    (r"\b(?:max_minutes|grad_ckpt|save_every|measured_from)\b", "a config key"),
)
# «مرحلهٔ memory» in either order: pypdf may give a right-to-left line in visual order.
_STAGE = "|".join(STAGE_NAMES)
# PDFium gives «هٔ» (heh + hamza above) as hamza then heh: «مرحلٔه».
STAGE_WORD = re.compile(rf"مرحل(?:ه|ٔه)[ٔۀ]?\W{{0,4}}(?:\S+\s+){{0,2}}?`?(?:{_STAGE})\b|\b(?:{_STAGE})`?\s+(?:\S+\s+){{0,2}}?مرحل")


@lru_cache(maxsize=1)
def _config_keys() -> re.Pattern[str]:
    """Every `section.key` of the configuration schema, as one pattern."""
    from ..config import SECTIONS, section_class
    from ..config import describe

    keys = sorted((f"{section}.{row[0]}" for section in SECTIONS for row in describe(section_class(section))),
                  key=len, reverse=True)
    return re.compile(r"(?<![\w.])(?:" + "|".join(map(re.escape, keys)) + r")(?![\w])")


_LATIN_TOKEN = re.compile(r"[A-Za-z0-9]*(?:[._/-]+[A-Za-z0-9]*)+")
_SEPARATORS = re.compile(r"([._/-]+)")


def _segments_reversed(text: str) -> str:
    """`text` with the segments of every Latin token joined by . _ / - in reverse order. Inside a right-to-left
    line the PDF text extractor (PDFium) orders those segments right to left, since the separators are bidi
    neutrals: `lora.scope` comes back as `scope.lora`, `train.max_minutes` as `minutes_max.train`."""
    return _LATIN_TOKEN.sub(lambda m: "".join(reversed(_SEPARATORS.split(m.group()))), text)


def vocabulary_findings(pages: list[str], where: str) -> list[Finding]:
    """One finding per banned word on a page of the compiled document's text (read both as extracted and with
    the segments of Latin tokens reversed, whichever order the extractor gave them in)."""
    rules = [(re.compile(p, re.IGNORECASE), why) for p, why in FIXED]
    rules += [(STAGE_WORD, "a stage name"), (_config_keys(), "a config key")]
    out = []
    for number, page in enumerate(pages, 1):
        seen: set[tuple[str, int]] = set()
        for pattern, why in rules:
            for m in (m for text in (page, _segments_reversed(page)) for m in pattern.finditer(text)):
                if (m.group(), id(pattern)) in seen:
                    continue
                seen.add((m.group(), id(pattern)))
                out.append(Finding("tool-vocabulary", f"{where} page {number}",
                                   f"«{' '.join(m.group().split())}» is {why}: the report is the student's answer and "
                                   "never names the tool's machinery (move it to the supplement or reword it)"))
    return out
