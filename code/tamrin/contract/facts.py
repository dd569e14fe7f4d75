"""CLEVR's closed world, shared by every stage: the 8 question types, the 28-answer vocabulary, attribute values,
word synonyms, and the two answer normalisations (the data stage's canonical answer, and the scoring
normalisation that exact match and ROUGE use — the report marks a sample right with that same function).
"""
from __future__ import annotations

import re

QTYPES: tuple[str, ...] = ("exist", "count", "compare_integer", "query_color", "query_shape",
                           "query_material", "query_size", "compare_attribute")

COLORS: tuple[str, ...] = ("gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow")
SHAPES: tuple[str, ...] = ("cube", "sphere", "cylinder")
MATERIALS: tuple[str, ...] = ("rubber", "metal")
SIZES: tuple[str, ...] = ("large", "small")
NUMBERS: tuple[str, ...] = tuple(str(i) for i in range(11))
YES_NO: tuple[str, ...] = ("yes", "no")

# The 28 answers of CLEVR v1.0 (DESIGN.md, "Question types").
ANSWERS: tuple[str, ...] = YES_NO + NUMBERS + COLORS + SHAPES + MATERIALS + SIZES
assert len(ANSWERS) == 28

ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "color": COLORS, "shape": SHAPES, "material": MATERIALS, "size": SIZES,
}

# Surface words CLEVR uses for each attribute value (CLEVR's synonyms.json); the first is the canonical word.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "thing": ("thing", "object"),
    "sphere": ("sphere", "ball"),
    "cube": ("cube", "block"),
    "cylinder": ("cylinder",),
    "large": ("large", "big"),
    "small": ("small", "tiny"),
    "metal": ("metal", "metallic", "shiny"),
    "rubber": ("rubber", "matte"),
}

# Answer spellings seen in CLEVR copies and VLM outputs → the canonical vocabulary word.
# Number words an answer may spell out (the scoring normalisation turns them into digits).
NUMBER_WORDS: dict[str, str] = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_ANSWER_ALIASES: dict[str, str] = {
    "grey": "gray", "metallic": "metal", "shiny": "metal", "matte": "rubber", "big": "large", "tiny": "small",
    "ball": "sphere", "block": "cube", "true": "yes", "false": "no", "none": "0",
    **{w: d for w, d in NUMBER_WORDS.items() if d in NUMBERS},  # zero … ten
}


def normalize_answer(text: str) -> str:
    """Lower-case, trim punctuation and map aliases: "Yes." → "yes", "Grey" → "gray", "two" → "2"."""
    word = text.strip().strip(".!?,;:\"'`").strip().lower()
    return _ANSWER_ALIASES.get(word, word)


def answer_kind(answer: str) -> str | None:
    """Which family a canonical answer belongs to: yes_no, number, color, shape, material, size (or None)."""
    families = {"yes_no": YES_NO, "number": NUMBERS, **ATTRIBUTE_VALUES}
    return next((family for family, values in families.items() if answer in values), None)


def normalize_for_scoring(text: str) -> str:
    """The eval stage's answer normalisation: lower case, punctuation → space, number words → digits, single
    spaces ("Two." and "2" are the same answer). Exact match, ROUGE and the report's ✓/✗ all use it."""
    words = re.sub(r"[^\w\s]|_", " ", str(text).lower()).split()
    return " ".join(NUMBER_WORDS.get(w, w) for w in words)


# The flow experiment's methods and source → target pairs, and the names figures and tables show for them.
FLOW_METHOD_LABELS: dict[str, str] = {"icfm": "I-CFM", "otcfm": "OT-CFM (exact minibatch OT)",
                                      "lipman": "FM (Lipman OT path, σ_min)"}
FLOW_PAIR_LABELS: dict[str, str] = {"gaussian-moons": "N(0, I) → two moons",
                                    "8gaussians-moons": "8 Gaussians → two moons"}
