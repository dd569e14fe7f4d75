"""The dataset: the first 20 rows through the data stage's own code — raw and cleaned, three (question, answer,
qtype) triples, and the share of QA pairs the cleaning could not parse (a format mismatch shows here first)."""
from __future__ import annotations

import time
from pathlib import Path

from ..data.hub import one_line as _short
from .result import FAIL, OK, WARN, Check, Facts

N_ROWS = 20
UNPARSED_WARN = 0.2  # more than this share of pairs lost to cleaning: the rules probably miss the row format


def _decodable(p) -> list[dict]:
    """The cleaned triples whose image decodes (as the data stage would keep them), with PNG bytes."""
    from ..data.images import BadImage, to_png

    pngs: dict[int, bytes | None] = {}
    for i, data in enumerate(p.images):
        try:
            pngs[i] = to_png(data)[0]
        except BadImage:
            pngs[i] = None
    return [{"image": pngs[c.image], "question": c.question, "answer": c.answer, "qtype": c.qtype}
            for c in p.cleaned if c.image >= 0 and pngs.get(c.image)]


def _hub(facts: Facts, cfg) -> Check:
    from ..data.hub import preview

    d = cfg.data
    local = Path(d.hub_id).is_dir()
    if not local and facts.hub_reachable is False:
        return Check("dataset", FAIL, f"{d.hub_id} not read: {facts.hub_reason.split(': ')[0]}",
                     facts.hub_reason.split(": ", 1)[-1])
    t = time.perf_counter()
    p = preview(d, N_ROWS)
    seconds = time.perf_counter() - t
    if not p.cleaned:
        return Check("dataset", FAIL, f"{p.rows} rows read, none gave a CLEVR question/answer",
                     "the row format differs from what data/cleaning.py handles: see the raw rows below; set "
                     "data.hub_layout / the column keys", details=[f"raw: {_short(u)} → {_short(a, 40)}" for u, a in p.raw[:3]])
    facts.examples = _decodable(p)
    facts.data_seconds_per_row = seconds / max(1, p.rows)
    facts.questions_per_row = len(p.cleaned) / max(1, p.rows)
    details = [f"raw row 1, pair {i + 1}: user {_short(u)!r} | assistant {_short(a, 40)!r}" for i, (u, a) in enumerate(p.raw[:3])]
    details += [f"cleaned: ({c.question!r}, {c.answer!r}, {c.qtype})" for c in p.cleaned[:3]]
    line = (f"{d.hub_id}{':' + d.hub_config if d.hub_config else ''}: {p.rows} rows, {p.pairs} QA pairs, "
            f"{p.unparsed_share:.0%} not parsed")
    if p.unparsed_share > UNPARSED_WARN:
        return Check("dataset", WARN, line, "many pairs lost to cleaning: compare the raw and cleaned rows below",
                     details)
    return Check("dataset", OK, line, details=details)


def _clevr_dir(facts: Facts, cfg) -> Check:
    from ..data.clevr_dir import image_id_of, iter_questions
    from ..data.qtype import classify
    from ..contract.facts import normalize_answer

    root = Path(cfg.data.path).expanduser()
    qfile = root / "questions" / f"CLEVR_{cfg.data.clevr_splits[0]}_questions.json"
    if not qfile.is_file():
        return Check("dataset", FAIL, f"missing {qfile}", "set data.path to the CLEVR_v1.0 folder")
    split = cfg.data.clevr_splits[0]
    examples = []
    for q in iter_questions(qfile):
        image_id, filename = image_id_of(q, split)
        path = root / "images" / split / filename
        answer = normalize_answer(str(q.get("answer", "")))
        if path.is_file():
            examples.append({"image": path.read_bytes(), "question": q["question"], "answer": answer,
                             "qtype": classify(q["question"], answer, q.get("program"))})
        if len(examples) >= N_ROWS:
            break
    if not examples:
        return Check("dataset", FAIL, f"no readable image for the first questions of {qfile.name}",
                     f"check {root / 'images' / split}")
    facts.examples = examples
    return Check("dataset", OK, f"CLEVR_v1.0 {split}: first {len(examples)} questions with their images read",
                 details=[f"({e['question']!r}, {e['answer']!r}, {e['qtype']})" for e in examples[:3]])


def _synthetic(facts: Facts, cfg) -> Check:
    from ..data.synthetic import make_scene

    d = cfg.data
    t = time.perf_counter()
    examples = []
    for i in range(N_ROWS):
        s = make_scene(d.seed, i, image_size=d.image_size, questions_per_scene=d.questions_per_scene,
                       min_objects=d.min_objects, max_objects=d.max_objects)
        examples += [{"image": s.png, "question": q.question, "answer": q.answer, "qtype": q.qtype} for q in s.questions]
    facts.examples = examples
    facts.data_seconds_per_row = (time.perf_counter() - t) / N_ROWS
    facts.questions_per_row = len(examples) / N_ROWS
    return Check("dataset", OK, f"synthetic: {N_ROWS} scenes rendered, {len(examples)} questions",
                 details=[f"({e['question']!r}, {e['answer']!r}, {e['qtype']})" for e in examples[:3]])


def check_dataset(facts: Facts, cfg) -> Check:
    return {"hub": _hub, "clevr_dir": _clevr_dir, "synthetic": _synthetic}[cfg.data.source](facts, cfg)
