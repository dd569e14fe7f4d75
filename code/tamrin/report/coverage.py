"""Coverage of the assignment: every question with its points, the prose file that answers it, and the check that
the answer exists.

A question is answered by a heading of its section template labelled `<q:ID>` (e.g. `=== سوال ۲: … <q:1.4.2>`).
The appendix table (templates/results/coverage.typ.j2) is built from these labels — its section numbers, pages
and supporting figures/tables are resolved by Typst from the label's position — so it cannot drift from the
prose. `findings` fails the report lint when a section template exists but lacks the heading of one of its
questions; a section template that does not exist at all is already shown as «not written yet» and its questions
are listed as unanswered in the table.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .lint import Finding


@dataclass(frozen=True)
class Question:
    id: str  # "1.4.2": question 1, part 4, item 2 (question 2's parts have no items: "2.3")
    points: float  # as the assignment gives them
    section: str  # the templates/sections/<name>.typ.j2 that answers it

    @property
    def label(self) -> str:
        return f"q:{self.id}"


# The assignment's questions in its order, with its points. Question 2, part 2 prints "(د) نمره" in the extracted
# assignment text (a garbled «۵»: every other item of question 2 is worth ۵).
QUESTIONS: tuple[Question, ...] = (
    Question("1.1.1", 2.5, "q1_1_vlm"), Question("1.1.2", 2.5, "q1_1_vlm"),
    Question("1.2.1", 5, "q1_2_siglip"), Question("1.2.2", 5, "q1_2_siglip"),
    Question("1.3.1", 6, "q1_3_pretraining"), Question("1.3.2", 4, "q1_3_pretraining"),
    Question("1.3.3", 5, "q1_3_pretraining"),
    Question("1.4.1", 5, "q1_4_transfer"), Question("1.4.2", 5, "q1_4_transfer"), Question("1.4.3", 10, "q1_4_transfer"),
    Question("1.5.1", 20, "q1_5_implementation"), Question("1.5.2", 10, "q1_5_implementation"),
    Question("1.5.3", 7, "q1_5_implementation"), Question("1.5.4", 3, "q1_5_implementation"),
    Question("2.1", 5, "q2_flow"), Question("2.2", 5, "q2_flow"), Question("2.3", 5, "q2_flow"),
)

_HEADING_LABEL = re.compile(r"^=+ .*<(q:[0-9.]+)>\s*$")


def heading_labels(source: str) -> list[str]:
    """The `<q:…>` labels that sit at the end of a heading line of a template."""
    return [m.group(1) for line in source.splitlines() if (m := _HEADING_LABEL.match(line))]


def _section_path(templates: Path, section: str) -> Path:
    return templates / "sections" / f"{section}.typ.j2"


def answered(templates: Path) -> dict[str, bool]:
    """Question id → whether its section template has a heading labelled for it."""
    labels: dict[str, list[str]] = {}
    out = {}
    for q in QUESTIONS:
        path = _section_path(templates, q.section)
        if q.section not in labels:
            labels[q.section] = heading_labels(path.read_text(encoding="utf-8")) if path.is_file() else []
        out[q.id] = q.label in labels[q.section]
    return out


def findings(templates: Path) -> list[Finding]:
    """One finding per question whose (existing) section template has no answer heading labelled for it."""
    done = answered(templates)
    out = []
    for q in QUESTIONS:
        path = _section_path(templates, q.section)
        if path.is_file() and not done[q.id]:
            out.append(Finding("coverage", f"templates/sections/{q.section}.typ.j2",
                               f"question {q.id} ({q.points:g} points) has no answer: add its heading with the "
                               f"label <{q.label}> (e.g. `=== سوال …: … <{q.label}>`), see templates/README.md"))
    return out


def rows(templates: Path) -> list[dict]:
    """The coverage table's rows, in the assignment's order: {id, label, points, answered, question (1 | 2),
    part, item (None for question 2's parts), first (the first row of its question)}."""
    done = answered(templates)
    out, seen = [], set()
    for q in QUESTIONS:
        numbers = [int(x) for x in q.id.split(".")]
        out.append({"id": q.id, "label": q.label, "points": q.points, "answered": done[q.id],
                    "question": numbers[0], "part": numbers[1], "item": numbers[2] if len(numbers) > 2 else None,
                    "first": numbers[0] not in seen})
        seen.add(numbers[0])
    return out


def total_points() -> float:
    return sum(q.points for q in QUESTIONS)
