"""How many pages each answer of the report may take, and how many it takes.

A grader wants every answer in about 36 pages (issue 21's table). The spans come from the report's own Typst
introspection (`report_layout`: every body heading with its page and height on the page), never from text
search. A part starts at the heading of its first question, or at the unlabelled headings just above it (the
chapter or زیربخش heading and its introduction), and ends where the next part starts; the last part (code
sources and references) ends with the document.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Budget:
    part: str  # a name for messages
    first: str  # the label of the heading the part starts at (walked up to its unlabelled parents)
    pages: float


FRONT_PAGES = 3.0  # cover, contents, lists of figures and tables
BUDGETS: tuple[Budget, ...] = (
    Budget("1.1 VLM", "q:1.1.1", 2), Budget("1.2 SigLIP", "q:1.2.1", 3), Budget("1.3 pre-training", "q:1.3.1", 3),
    Budget("1.4.1 LoRA/QLoRA", "q:1.4.1", 2), Budget("1.4.2 memory", "q:1.4.2", 2),
    Budget("1.4.3 CoPrompt", "q:1.4.3", 2), Budget("1.5 dataset + 1.5.1 training", "q:1.5.1", 4),
    Budget("1.5.2 ROUGE", "q:1.5.2", 2.5), Budget("1.5.3 + 1.5.4 results", "q:1.5.3", 3),
    Budget("2.1 FM = CFM", "q:2.1", 1.5), Budget("2.2 u_t", "q:2.2", 1.5), Budget("2.3 OT", "q:2.3", 3),
    Budget("code sources and references", "sec:attribution", 3.5),
)
TOLERANCE = 0.30  # a span may exceed its budget by this share before the budget test fails


def _start_index(headings: list[dict[str, Any]], label: str) -> int:
    i = next(k for k, h in enumerate(headings) if h["label"] == label)
    while i > 0 and not headings[i - 1]["label"] and headings[i - 1]["level"] <= headings[i]["level"]:
        i -= 1
    return i


def spans(layout: dict[str, Any]) -> dict[str, float]:
    """Pages each part takes (fractional: page + height on the page / page height), the front matter first."""
    height = layout["page-height"]
    headings = layout["headings"]
    starts = []
    for b in BUDGETS:
        h = headings[_start_index(headings, b.first)]
        starts.append(h["page"] + h["y"] / height)
    ends = starts[1:] + [layout["physical-pages"] + 1.0]
    out = {"front matter": float(layout["body-start"] - 1)}
    out.update({b.part: end - start for b, start, end in zip(BUDGETS, starts, ends)})
    return out


def over_budget(layout: dict[str, Any], tolerance: float = TOLERANCE) -> list[str]:
    """One line per part whose span exceeds its budget by more than `tolerance`."""
    limits = {"front matter": FRONT_PAGES, **{b.part: b.pages for b in BUDGETS}}
    return [f"{part}: {span:.1f} pages, budget {limits[part]:g} (+{tolerance:.0%} allowed)"
            for part, span in spans(layout).items() if span > limits[part] * (1 + tolerance)]
