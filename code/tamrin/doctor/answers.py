"""A few greedy answers of the model the timed steps built, through the eval stage's own generator (vlm/generate):
degraded numerics (fp16 overflow on a T4, a wrong prompt) show as words before a long run, not as a ROUGE score
after it."""
from __future__ import annotations

from typing import Sequence

N_ANSWERS = 3


def sample_answers(model, processor, rows: Sequence[dict], images, prefix: str, *, device, max_new_tokens: int,
                   n: int = N_ANSWERS) -> list[tuple[str, str, str]]:
    """(question, reference answer, generated answer) for the first `n` rows, greedy, in one batch."""
    from ..vlm.generate import answer

    chosen = list(rows[:n])
    got = answer(model, processor, chosen, images, prefix, batch_size=max(1, len(chosen)),
                 max_new_tokens=max_new_tokens, device=device, progress=False)
    return [(r["question"], str(r["answer"]), g) for r, g in zip(chosen, got)]


def answer_lines(answers: Sequence[tuple[str, str, str]]) -> list[str]:
    """One detail line per answer, for the table's 'timed steps' section."""
    return [f"answer {i + 1}: {q!r} → {got!r} (reference {ref!r})" for i, (q, ref, got) in enumerate(answers)]
