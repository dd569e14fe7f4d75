"""CLEVR-style questions of DESIGN.md's 8 types from templates, answered by executing them on the scene graph.

Objects are named by a description (`[size] [color] [material] shape-or-thing`, CLEVR's synonyms), maybe with one
spatial relation to an anchor ("the cube that is left of the red sphere"). Only well-posed questions are kept:
"the X" denotes exactly one object, a queried attribute is never given away, and every relation is unambiguous
(the objects differ by at least `RELATION_MARGIN` along its axis). Answers are kept close to balanced (see `ask`).
"""
from __future__ import annotations

import functools
import itertools
import operator
import random
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..contract.facts import ATTRIBUTE_VALUES, SYNONYMS

ATTRS = ("size", "color", "material", "shape")  # word order in a description
RELATIONS: tuple[str, ...] = ("left", "right", "behind", "front")
RELATION_MARGIN = 0.45  # world units: closer along the axis → the relation is ambiguous
REL_WORDS = {"left": "left of", "right": "right of", "behind": "behind", "front": "in front of"}
QUERY_TEMPLATES = {
    "color": ("What color is the {R}?", "What is the color of the {R}?", "The {R} is what color?"),
    "shape": ("What shape is the {R}?", "What is the shape of the {R}?", "The {R} has what shape?"),
    "material": ("What material is the {R}?", "What is the {R} made of?", "What is the material of the {R}?"),
    "size": ("What size is the {R}?", "What is the size of the {R}?", "How big is the {R}?"),
}
COMPARE_ATTRIBUTE_TEMPLATES = {
    **{a: (f"Is the {{R1}} the same {a} as the {{R2}}?", f"Does the {{R1}} have the same {a} as the {{R2}}?",
           f"Do the {{R1}} and the {{R2}} have the same {a}?") for a in ("color", "shape", "size")},
    "material": ("Is the {R1} made of the same material as the {R2}?",
                 "Does the {R1} have the same material as the {R2}?",
                 "Are the {R1} and the {R2} made of the same material?"),
}
# (template, comparison of the two counts)
COMPARE_INTEGER_TEMPLATES: tuple[tuple[str, Callable[[int, int], bool]], ...] = (
    ("Are there more {D1} than {D2}?", lambda a, b: a > b),
    ("Are there fewer {D1} than {D2}?", lambda a, b: a < b),
    ("Is the number of {D1} greater than the number of {D2}?", lambda a, b: a > b),
    ("Is the number of {D1} less than the number of {D2}?", lambda a, b: a < b),
    ("Are there the same number of {D1} and {D2}?", lambda a, b: a == b),
    ("Are there an equal number of {D1} and {D2}?", lambda a, b: a == b),
    ("Is the number of {D1} the same as the number of {D2}?", lambda a, b: a == b),
)
CANDIDATES = 8  # candidates sampled per question before picking a balanced answer
RELATION_PROB = 0.3  # share of descriptions that use a spatial relation, where one is possible

Desc = dict  # attribute name -> value, a subset of ATTRS


def relation_holds(a: Any, b: Any, rel: str) -> bool | None:
    """Is scene object `a` <rel> `b`? True/False when clear, None when the pair is within the ambiguity margin."""
    delta = {"left": b.x - a.x, "right": a.x - b.x, "behind": a.y - b.y, "front": b.y - a.y}[rel]
    if abs(delta) < RELATION_MARGIN:
        return None
    return delta > 0


@dataclass(frozen=True)
class Question:
    question: str
    answer: str
    qtype: str


def desc_words(desc: Desc, rng: random.Random, plural: bool = False) -> str:
    """'large red metal cube' with CLEVR synonyms; 'thing'/'object' when the shape is not given."""
    words = [rng.choice(SYNONYMS.get(desc[a], (desc[a],))) for a in ATTRS[:3] if a in desc]
    shape = desc.get("shape", "thing")
    noun = rng.choice(SYNONYMS.get(shape, (shape,)))
    return " ".join([*words, noun + "s" if plural else noun])


def _bits(flags) -> int:
    return sum(1 << i for i, flag in enumerate(flags) if flag)


class SceneQuestions:
    """Well-posed, answer-balanced questions about the objects of one scene."""

    def __init__(self, objects: list[Any], rng: random.Random) -> None:
        self.objects = objects
        self.rng = rng
        # Object sets are bit masks over object indices: set algebra stays cheap inside the candidate loops.
        self._value_mask: dict[tuple[str, str], int] = {}
        for i, o in enumerate(self.objects):
            for a in ATTRS:
                self._value_mask[(a, getattr(o, a))] = self._value_mask.get((a, getattr(o, a)), 0) | (1 << i)
        self._all = (1 << len(self.objects)) - 1
        self._masks: dict[tuple, int] = {}
        # For each object: every subset of its attributes (0–3 of them, shortest first) and the mask it selects.
        self._subsets = [[(attrs, self._mask({a: getattr(o, a) for a in attrs}))
                          for k in range(4) for attrs in itertools.combinations(ATTRS, k)] for o in self.objects]
        self._unique: dict[tuple[int, tuple[str, ...]], list[Desc]] = {}
        # (anchor, relation) -> (objects for which it holds, objects too close to tell), excluding the anchor
        self._rel: dict[tuple[int, str], tuple[int, int]] = {}
        for j, anchor in enumerate(self.objects):
            for rel in RELATIONS:
                holds = [i != j and relation_holds(o, anchor, rel) for i, o in enumerate(self.objects)]
                self._rel[(j, rel)] = (_bits(h is True for h in holds), _bits(h is None for h in holds))

    # --- descriptions and references -------------------------------------------------------------------------
    def _mask(self, desc: Desc) -> int:
        key = tuple(sorted(desc.items()))
        if key not in self._masks:
            self._masks[key] = functools.reduce(operator.and_, (self._value_mask.get(i, 0) for i in key), self._all)
        return self._masks[key]

    def _count_of(self, desc: Desc) -> int:
        return self._mask(desc).bit_count()

    def _random_desc(self, min_attrs: int = 1, max_attrs: int = 2) -> Desc:
        """Attributes of an existing object half the time (non-empty sets), random values otherwise."""
        k = self.rng.randint(min_attrs, max_attrs)
        attrs = self.rng.sample(ATTRS, k)
        if self.rng.random() < 0.5:
            o = self.rng.choice(self.objects)
            return {a: getattr(o, a) for a in attrs}
        return {a: self.rng.choice(ATTRIBUTE_VALUES[a]) for a in attrs}

    def _unique_descs(self, i: int, forbid: tuple[str, ...] = ()) -> list[Desc]:
        """Descriptions (1–3 attributes of object i, without `forbid`) that denote object i alone."""
        key = (i, forbid)
        if key not in self._unique:
            o, bit = self.objects[i], 1 << i
            self._unique[key] = [{a: getattr(o, a) for a in attrs} for attrs, m in self._subsets[i]
                                 if attrs and m == bit and not any(a in forbid for a in attrs)]
        return self._unique[key]

    def refer(self, i: int, forbid: tuple[str, ...] = ()) -> Optional[str]:
        """Words for 'the …' that denote object i alone (maybe through a relation), never naming `forbid`."""
        if self.rng.random() < RELATION_PROB:
            text = self._refer_by_relation(i, forbid)
            if text:
                return text
        descs = self._unique_descs(i, forbid)
        if not descs:
            return self._refer_by_relation(i, forbid)
        weights = [1.0 / len(d) ** 1.5 for d in descs]  # prefer short descriptions, like CLEVR
        return desc_words(self.rng.choices(descs, weights)[0], self.rng)

    def _anchor(self, avoid: Optional[int]) -> Optional[tuple[int, str]]:
        others = [j for j in range(len(self.objects)) if j != avoid]
        self.rng.shuffle(others)
        for j in others:
            descs = self._unique_descs(j)
            if descs:
                return j, desc_words(self.rng.choice(descs), self.rng)
        return None

    def _refer_by_relation(self, i: int, forbid: tuple[str, ...]) -> Optional[str]:
        picked = self._anchor(i)
        if picked is None:
            return None
        anchor, anchor_words = picked
        o, bit = self.objects[i], 1 << i
        rels = list(RELATIONS)
        self.rng.shuffle(rels)
        for rel in rels:
            true, ambiguous = self._rel[(anchor, rel)]
            for attrs, m in self._subsets[i]:
                if len(attrs) > 2 or m == bit or any(a in forbid for a in attrs):
                    continue  # too long, or the relation would be redundant, or it names the asked attribute
                candidates = m & ~(1 << anchor)
                if not candidates & ambiguous and candidates & true == bit:
                    desc = {a: getattr(o, a) for a in attrs}
                    return f"{desc_words(desc, self.rng)} that is {REL_WORDS[rel]} the {anchor_words}"
        return None

    # --- one candidate per question type ---------------------------------------------------------------------
    def _counted_set(self, allow_empty: bool) -> Optional[tuple[Desc, int, str]]:
        """A random set of objects, maybe restricted by a relation to an anchor: (its description, its size, the
        relation's words or "")."""
        if self.rng.random() < RELATION_PROB and len(self.objects) > 1:
            picked = self._anchor(avoid=None)
            if picked is None:
                return None
            anchor, anchor_words = picked
            rel = self.rng.choice(RELATIONS)
            desc = self._random_desc(0, 2)
            candidates = self._mask(desc) & ~(1 << anchor)
            true, ambiguous = self._rel[(anchor, rel)]
            if candidates & ambiguous:  # a candidate too close to the anchor to tell
                return None
            return desc, (candidates & true).bit_count(), f"{REL_WORDS[rel]} the {anchor_words}"
        desc = self._random_desc(0 if allow_empty else 1, 3)
        return desc, self._count_of(desc), ""

    def _exist(self) -> Optional[Question]:
        got = self._counted_set(allow_empty=False)
        if got is None:
            return None
        desc, count, relation = got
        tail = f" {relation}" if relation else ""
        if self.rng.random() < 0.5:
            words = desc_words(desc, self.rng)
            text = f"Is there {'an' if words[0] in 'aeiou' else 'a'} {words}{tail}?"
        else:
            text = f"Are there any {desc_words(desc, self.rng, plural=True)}{tail}?"
        return Question(text, "yes" if count > 0 else "no", "exist")

    def _count(self) -> Optional[Question]:
        got = self._counted_set(allow_empty=True)
        if got is None:
            return None
        desc, count, relation = got
        lead = self.rng.choice(("How many", "What number of"))
        return Question(f"{lead} {desc_words(desc, self.rng, plural=True)} are {relation or 'there'}?", str(count),
                        "count")

    def _compare_integer(self) -> Optional[Question]:
        d1, d2 = self._random_desc(1, 2), self._random_desc(1, 2)
        if d1 == d2:
            return None
        n1, n2 = self._count_of(d1), self._count_of(d2)
        template, compare = self.rng.choice(COMPARE_INTEGER_TEMPLATES)
        text = template.format(D1=desc_words(d1, self.rng, plural=True), D2=desc_words(d2, self.rng, plural=True))
        return Question(text, "yes" if compare(n1, n2) else "no", "compare_integer")

    def _query(self, attr: str) -> Optional[Question]:
        """Balanced by construction: the answer value is drawn uniformly among the values present, then an
        object that has it (and can be referred to)."""
        values = sorted({getattr(o, attr) for o in self.objects})
        self.rng.shuffle(values)
        for value in values:
            holders = [i for i, o in enumerate(self.objects) if getattr(o, attr) == value]
            self.rng.shuffle(holders)
            for i in holders:
                ref = self.refer(i, forbid=(attr,))
                if ref is not None:
                    text = self.rng.choice(QUERY_TEMPLATES[attr]).format(R=ref)
                    return Question(text, value, f"query_{attr}")
        return None

    def _compare_attribute(self) -> Optional[Question]:
        """Balanced by construction: "same" or "different" first, then a pair of objects that is."""
        if len(self.objects) < 2:
            return None
        attrs = list(ATTRS)
        self.rng.shuffle(attrs)
        want_same = self.rng.random() < 0.5
        for attr in attrs:
            pairs = [(i, j) for i in range(len(self.objects)) for j in range(len(self.objects)) if i != j
                     and (getattr(self.objects[i], attr) == getattr(self.objects[j], attr)) == want_same]
            self.rng.shuffle(pairs)
            for i, j in pairs[:4]:
                r1, r2 = self.refer(i, forbid=(attr,)), self.refer(j, forbid=(attr,))
                if r1 is not None and r2 is not None:
                    text = self.rng.choice(COMPARE_ATTRIBUTE_TEMPLATES[attr]).format(R1=r1, R2=r2)
                    return Question(text, "yes" if want_same else "no", "compare_attribute")
        return None

    def candidate(self, qtype: str) -> Optional[Question]:
        if qtype.startswith("query_"):
            return self._query(qtype[len("query_"):])
        return {"exist": self._exist, "count": self._count, "compare_integer": self._compare_integer,
                "compare_attribute": self._compare_attribute}[qtype]()

    def ask(self, qtype: str, avoid: set[str] = frozenset()) -> Optional[Question]:  # type: ignore[assignment]
        """One question of this type, new to `avoid`. Query and compare-attribute questions are balanced as
        they are drawn; for the others several candidates are sampled and an answer is picked uniformly among
        those reached."""
        direct = qtype.startswith("query_") or qtype == "compare_attribute"
        by_answer: dict[str, list[Question]] = {}
        for _ in range(3 if direct else CANDIDATES):
            q = self.candidate(qtype)
            if q is not None and q.question not in avoid:
                if direct:
                    return q
                by_answer.setdefault(q.answer, []).append(q)
        if not by_answer:
            return None
        answer = self.rng.choice(sorted(by_answer))
        return self.rng.choice(by_answer[answer])
