"""Question type (DESIGN.md's 8 CLEVR types): from the functional program when there is one, else from the
question's wording and its answer.

CLEVR's question types are named by the last function of the program: `exist`, `count`,
`equal_integer`/`less_than`/`greater_than` (compare_integer), `query_<attr>`, `equal_<attr>` (compare_attribute).
Without a program the answer family narrows the type (a number → count, a colour → query_color, …) and, for
yes/no answers, the wording separates exist, compare_integer and compare_attribute.
"""
from __future__ import annotations

import re
from typing import Any, Optional

from ..contract.facts import answer_kind, normalize_answer

_PROGRAM_LAST: dict[str, str] = {
    "exist": "exist", "count": "count",
    "equal_integer": "compare_integer", "less_than": "compare_integer", "greater_than": "compare_integer",
    "query_color": "query_color", "query_shape": "query_shape",
    "query_material": "query_material", "query_size": "query_size",
    "equal_color": "compare_attribute", "equal_shape": "compare_attribute",
    "equal_material": "compare_attribute", "equal_size": "compare_attribute",
}


def _function_name(node: Any) -> str:
    """A program node's function: CLEVR v1.0 uses `function`, older dumps `type`; `f[value]` forms are cut."""
    if isinstance(node, str):
        name = node
    elif isinstance(node, dict):
        name = node.get("function") or node.get("type") or ""
    else:
        name = ""
    return str(name).split("[", 1)[0].strip()


def qtype_from_program(program: Any) -> Optional[str]:
    """The type named by the program's final node, or None when the program is empty or unknown."""
    if not program or not isinstance(program, (list, tuple)):
        return None
    return _PROGRAM_LAST.get(_function_name(program[-1]))


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
    if _EXIST.search(q):
        return "exist"
    if _COMPARE_ATTRIBUTE.search(q):
        return "compare_attribute"
    return "exist"


def qtype_from_wording(question: str, answer: Optional[str] = None) -> Optional[str]:
    """The type implied by the answer's family and the wording; None when neither says anything."""
    q = " ".join(question.lower().split())
    kind = answer_kind(normalize_answer(answer)) if answer is not None else None
    if kind == "yes_no":
        return _yes_no_type(q)
    if kind == "number":
        return "count"
    if kind in ("color", "shape", "material", "size"):
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
    """Program first (exact), else wording + answer vocabulary."""
    return qtype_from_program(program) or qtype_from_wording(question, answer)
