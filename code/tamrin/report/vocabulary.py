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
    (r"\bcache[ _-]?keys?\b|کلید (?:کش|حافظهٔ نهان)", "a cache key"),
    (r"\bmanifest(?:\.json)?\b", "a manifest"),
    (r"\bresults/", "a results path"),
    (r"\b(?:max_minutes|grad_ckpt|save_every|measured_from)\b", "a config key"),
)
# «مرحلهٔ memory» in either order: pypdf may give a right-to-left line in visual order.
_STAGE = "|".join(STAGE_NAMES)
STAGE_WORD = re.compile(rf"مرحله[ٔۀ]?\W{{0,4}}(?:\S+\s+){{0,2}}?`?(?:{_STAGE})\b|\b(?:{_STAGE})`?\s+(?:\S+\s+){{0,2}}?مرحله")


@lru_cache(maxsize=1)
def _config_keys() -> re.Pattern[str]:
    """Every `section.key` of the configuration schema, as one pattern."""
    from ..config import SECTIONS, section_class
    from ..schema import describe

    keys = sorted((f"{section}.{row[0]}" for section in SECTIONS for row in describe(section_class(section))),
                  key=len, reverse=True)
    return re.compile(r"(?<![\w.])(?:" + "|".join(map(re.escape, keys)) + r")(?![\w])")


def vocabulary_findings(pages: list[str], where: str) -> list[Finding]:
    """One finding per banned word on a page of the compiled document's text."""
    rules = [(re.compile(p, re.IGNORECASE), why) for p, why in FIXED]
    rules += [(STAGE_WORD, "a stage name"), (_config_keys(), "a config key")]
    out = []
    for number, text in enumerate(pages, 1):
        for pattern, why in rules:
            for m in pattern.finditer(text):
                out.append(Finding("tool-vocabulary", f"{where} page {number}",
                                   f"«{' '.join(m.group().split())}» is {why}: the report is the student's answer and "
                                   "never names the tool's machinery (move it to the supplement or reword it)"))
    return out
