"""Raw CLEVR QA text → the bare question, the bare vocabulary answer and the question type.

The_cauldron's `clevr` config is parquet shards (`tree/main/clevr` on huggingface.co) of rows `{"images": [image],
"texts": [{"user": …, "assistant": …}, …]}` (the keys torchtune's `TheCauldronToMessages` reads,
pytorch/torchtune `torchtune/datasets/multimodal/_the_cauldron.py`). Not confirmed offline: the wording inside the
turns. The Cauldron appends answer-format instructions to many questions and writes many answers as a reply, so
both forms are handled; `build.py doctor` prints raw and cleaned rows, and stats.json counts unparsed pairs.
"""
from __future__ import annotations

import re
from typing import Any, Optional

from ..contract.facts import ANSWERS, answer_kind, normalize_answer

_IMAGE_TOKENS = re.compile(r"<image>|<img>|<\|image\|>|<\|image_pad\|>", re.IGNORECASE)

# A whole line that only tells the model how to answer.
INSTRUCTION_PATTERNS: tuple[str, ...] = (
    r"(please\s+)?(answer|respond|reply)\b.*\b(word|words|phrase|briefly|short|number|yes or no|concise|directly)\b.*",
    r"(please\s+)?(answer|respond|reply)( briefly| shortly| concisely)?[.!:]?",
    r"(please\s+)?give (a |an )?(very )?(short|brief|concise|one-word|single[- ]word)\b.*",
    r"(please\s+)?provide (a |an )?(very )?(short|brief|concise|one-word|single[- ]word)\b.*",
    r"(short|brief|concise) (answer|response|reply)( required| only| please)?[.!:]?",
    r"(be (brief|concise|succinct)|keep it (short|brief)|quick response, please)[.!]?",
    r"(the )?(answer|response) (should|must) be\b.*",
    r"(answer|a)\s*:\s*",
)
_INSTRUCTION_LINE = re.compile(r"^(?:" + "|".join(INSTRUCTION_PATTERNS) + r")$", re.IGNORECASE)
_LABEL = re.compile(r"^(question|q|user|human)\s*:\s*", re.IGNORECASE)
_ANSWER_LABEL = re.compile(r"^(answer|a|assistant|gpt)\s*:\s*", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!])\s+")  # between the sentences of an instruction tail
_ANSWER_FRAME = re.compile(r"^(so\s*,?\s*)?the (final |correct )?answer is\s*:?\s*", re.IGNORECASE)


def _is_instruction(line: str) -> bool:
    return bool(_INSTRUCTION_LINE.match(line.strip()))


def _cut_instruction_tail(line: str) -> str:
    """"…cube? Answer with one word. Be brief." → "…cube?" when every sentence after the last "?" is an
    instruction (a tail that is not, e.g. a second clause of the question, is kept)."""
    if "?" not in line:
        return line
    head, tail = line.rsplit("?", 1)
    sentences = [x for x in _SENTENCE_END.split(tail.strip()) if x.strip()]
    if sentences and all(_is_instruction(x) for x in sentences):
        return head + "?"
    return line


def clean_question(user_text: str) -> str:
    """The bare question inside an instruction-formatted user turn ("" when none is left): image placeholders,
    instruction lines and sentences and speaker labels dropped, and of the lines ending in "?" only the last kept
    (a CLEVR question is one sentence: an instruction the patterns miss cannot leak in)."""
    text = _IMAGE_TOKENS.sub(" ", user_text or "")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # Tails first: a question line with an instruction glued on must end in "?" when the question lines are chosen
    lines = [_cut_instruction_tail(ln) for ln in lines]
    lines = [ln for ln in lines if not _is_instruction(ln)]
    asked = [ln for ln in lines if ln.endswith("?")]
    if asked:
        lines = asked[-1:]
    return " ".join(" ".join(_LABEL.sub("", ln) for ln in lines).split())


def clean_answer(assistant_text: str) -> Optional[str]:
    """The canonical CLEVR answer inside an assistant reply (label and "The answer is …" stripped, then
    `normalize_answer`: case, punctuation, grey→gray, two→2), or None when it is not one of the 28 answers."""
    answer = normalize_answer(_ANSWER_FRAME.sub("", _ANSWER_LABEL.sub("", (assistant_text or "").strip())))
    return answer if answer in ANSWERS else None


_ATTRIBUTES = ("color", "shape", "material", "size")
_PROGRAM_LAST: dict[str, str] = {
    "exist": "exist", "count": "count",
    **dict.fromkeys(("equal_integer", "less_than", "greater_than"), "compare_integer"),
    **{f"query_{a}": f"query_{a}" for a in _ATTRIBUTES}, **{f"equal_{a}": "compare_attribute" for a in _ATTRIBUTES},
}


def qtype_from_program(program: Any) -> Optional[str]:
    """The type named by the program's final node, or None when the program is empty or unknown. A node's function
    is `function` in CLEVR v1.0, `type` in older dumps; `f[value]` forms are cut."""
    if not program or not isinstance(program, (list, tuple)):
        return None
    node = program[-1]
    name = node if isinstance(node, str) else node.get("function") or node.get("type") if isinstance(node, dict) else ""
    return _PROGRAM_LAST.get(str(name or "").split("[", 1)[0].strip())


# compare_integer: "more/fewer/less/greater … than", "same/equal number", "the number of … (the same as …)",
# "as many … as" (yes/no questions only: exist and compare-attribute questions never count).
_COMPARE_INTEGER = re.compile(r"\b(more|fewer|less|greater)\b.*\bthan\b|\b(same|equal) (number|amount)\b"
                              r"|\bnumber of\b|\bas many\b")
# exist: "is there / are there …", "is anything …", "are any …" (including "there is a X; are there any …").
_EXIST = re.compile(r"\b(is|are) there\b|^(is|are) (any|anything)\b|\banything else\b|\bdoes .* exist\b")
# compare_attribute: "the same color/shape/size/material (as)", "made of the same material".
_COMPARE_ATTRIBUTE = re.compile(r"\bsame (colou?r|shape|size|material)\b|\bmade of the same\b|\bthe same as\b")

# Query wording: the attribute asked for is the one named in the question's head ("What size is the cylinder
# that is the same color as …" asks for size), so the earliest match wins.
_QUERY_WORDING: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"\bhow many\b|\bwhat number of\b"), "count"),
    (re.compile(r"\bwhat colou?r\b|\bthe colou?r of\b|\bis what colou?r\b|\bits colou?r\b"), "query_color"),
    (re.compile(r"\bwhat shape\b|\bthe shape of\b|\bhas what shape\b|\bis what shape\b|\bits shape\b"),
     "query_shape"),
    (re.compile(r"\bwhat material\b|\bthe material of\b|\bmade of(?! the same)\b|\bis what material\b"
                r"|\bits material\b"), "query_material"),
    (re.compile(r"\bwhat size\b|\bthe size of\b|\bhow big\b|\bis what size\b|\bits size\b"), "query_size"),
)


def _yes_no_type(q: str) -> str:
    if _COMPARE_INTEGER.search(q):
        return "compare_integer"
    return "compare_attribute" if not _EXIST.search(q) and _COMPARE_ATTRIBUTE.search(q) else "exist"


def qtype_from_wording(question: str, answer: Optional[str] = None) -> Optional[str]:
    """The type implied by the answer's family and the wording; None when neither says anything."""
    q = " ".join(question.lower().split())
    kind = answer_kind(normalize_answer(answer)) if answer is not None else None
    if kind == "yes_no":
        return _yes_no_type(q)
    if kind == "number":
        return "count"
    if kind in _ATTRIBUTES:
        return f"query_{kind}"
    # Unknown answer: the wording alone — counting openers, then yes/no openers, then the queried attribute.
    # "There is a small cube; what is its shape?": the clause after the last ";" is the question proper.
    head = q.rsplit(";", 1)[-1].strip()
    if re.match(r"^(how many|what number of)\b", head):
        return "count"
    if re.match(r"^(is|are|does|do|there is|there are)\b", head):
        return _yes_no_type(q)
    hits = [(m.start(), qtype) for pattern, qtype in _QUERY_WORDING if (m := pattern.search(head))]
    return min(hits)[1] if hits else None


def classify(question: str, answer: Optional[str] = None, program: Any = None) -> Optional[str]:
    """CLEVR names a question by the last function of its program (exact); without one, the answer's family
    narrows the type and, for yes/no answers, the wording separates exist, compare_integer and compare_attribute."""
    return qtype_from_program(program) or qtype_from_wording(question, answer)
