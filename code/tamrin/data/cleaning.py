"""Cleaning rules for instruction-formatted CLEVR copies (HuggingFaceM4/the_cauldron and the like).

The real row format of the_cauldron's `clevr` config, and where each part of it comes from:
- Confirmed: the config is parquet shards `clevr/train-000NN-of-00024-*.parquet` (the repository's file tree on
  huggingface.co, `tree/main/clevr`), and a row is `{"images": [image, …], "texts": [{"user": …, "assistant": …},
  …]}` — one list of images (one image for CLEVR) and one list of QA turns about it (torchtune's
  `TheCauldronToMessages`, pytorch/torchtune `torchtune/datasets/multimodal/_the_cauldron.py`, which reads
  exactly these keys; the dataset card names the columns the same way). The image cells are `datasets.Image`
  features: undecoded, `{"bytes": …, "path": …}` (data/hub.py reads them so).
- Not confirmed offline (the hub is out of reach where this was written): the exact wording inside `user` and
  `assistant`. The Cauldron appends an answer-format instruction to many questions and writes many answers as
  a reply, so both forms of each are handled — a bare question, or a question followed by an instruction line
  ("…?\nAnswer the question using a single word or phrase."), and a bare answer ("2") or a reply ("Answer: 2.",
  "2.", "Yes."). `build.py doctor` prints the raw and the cleaned first rows of the real stream, so a format
  these rules miss shows before training, and stats.json counts the pairs that could not be parsed.

The record must hold the bare CLEVR question and the bare vocabulary answer, so these rules are applied, in order:

Question (`clean_question`):
  Q1. drop image placeholders (`<image>`, `<img>`, `<|image|>`);
  Q2. split into lines; drop empty lines;
  Q3. drop every line that is an instruction (`INSTRUCTION_PATTERNS`: "Answer the question using a single word
      or phrase.", "Give a very brief answer.", "Answer briefly.", "Short answer:", "Be concise." …) and any
      trailing answer stub ("Answer:", "A:"); then, since a CLEVR question is one sentence ending in "?", when
      some line ends in "?" only the last such line is kept (an instruction worded in a way the patterns miss
      cannot leak into the question);
  Q4. (applied to every line first, so that such a line counts as a question line in Q3) cut the instruction
      sentences that follow the last "?" on the same line ("…cube? Answer with one word. Be concise.");
  Q5. strip a leading speaker/field label ("Question:", "Q:", "User:");
  Q6. join what remains with single spaces; an empty result means "no question" (the pair is skipped).
Answer (`clean_answer`):
  A1. strip a leading label ("Answer:", "A:", "Assistant:") and a sentence frame "The answer is …";
  A2. normalise with `contract.facts.normalize_answer` (case, trailing punctuation, aliases such as grey→gray, two→2);
  A3. the result must be one of the 28 CLEVR answers, else None (the pair is skipped and counted).
"""
from __future__ import annotations

import re
from typing import Optional

from ..contract.facts import ANSWERS, normalize_answer

_IMAGE_TOKENS = re.compile(r"<image>|<img>|<\|image\|>|<\|image_pad\|>", re.IGNORECASE)

# Q3: a whole line that only tells the model how to answer.
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
    """Q4: "…cube? Answer with one word. Be brief." → "…cube?" when every sentence after the last "?" is an
    instruction (a tail that is not, e.g. a second clause of the question, is kept)."""
    if "?" not in line:
        return line
    head, tail = line.rsplit("?", 1)
    sentences = [x for x in _SENTENCE_END.split(tail.strip()) if x.strip()]
    if sentences and all(_is_instruction(x) for x in sentences):
        return head + "?"
    return line


def clean_question(user_text: str) -> str:
    """The bare question inside an instruction-formatted user turn ("" when none is left)."""
    text = _IMAGE_TOKENS.sub(" ", user_text or "")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # Q4 before Q3: a question line with an instruction glued on must end in "?" when the question lines are chosen
    lines = [_cut_instruction_tail(ln) for ln in lines]
    lines = [ln for ln in lines if not _is_instruction(ln)]
    asked = [ln for ln in lines if ln.endswith("?")]
    if asked:
        lines = asked[-1:]
    out = []
    for ln in lines:
        ln = _LABEL.sub("", ln).strip()
        if ln:
            out.append(ln)
    return " ".join(" ".join(out).split())


def clean_answer(assistant_text: str) -> Optional[str]:
    """The canonical CLEVR answer inside an assistant reply, or None when it is not one of the 28 answers."""
    text = (assistant_text or "").strip()
    text = _ANSWER_LABEL.sub("", text)
    text = _ANSWER_FRAME.sub("", text)
    answer = normalize_answer(text)
    return answer if answer in ANSWERS else None
