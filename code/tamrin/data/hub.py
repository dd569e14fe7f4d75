"""The hub source: a CLEVR copy streamed with `datasets.load_dataset(..., streaming=True)`.

Default: `HuggingFaceM4/the_cauldron`, config `clevr` (rows of `images` + `texts`, see `cleaning`); `hub_layout =
"flat"` reads one QA pair per row from `question_column` / `answer_column` (and `program_column`). The stream is
shuffled with the seed (shard order + a bounded buffer) and read until the stage has kept its question target.
Failures before the first row become one line naming the fix; a row format the cleaning does not read stops the
stage after a few hundred rows (`RowFormatCheck`), not after the whole stream.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from ..errors import TamrinError, explain
from .cleaning import classify, clean_answer, clean_question

EARLY_ROWS = 300  # rows read from the source before the stage judges whether it reads their format
EARLY_MIN_KEPT = 0.5  # share of the QA pairs of those rows the cleaning must turn into CLEVR pairs

# Datasets that are (or were) loading scripts: `datasets` ≥ 4 refuses them.
SCRIPT_DATASETS = {"HuggingFaceM4/clevr": "HuggingFaceM4/the_cauldron (config clevr)"}
_FIX_SOURCE = "or build offline with --set data.source=synthetic (or data.source=clevr_dir with data.path)"


@dataclass
class HubCounts:
    rows: int = 0
    pairs: int = 0
    off_vocabulary: int = 0
    unparsed: int = 0
    examples_skipped: list[dict] = field(default_factory=list)  # a few raw pairs that were skipped, for the log
    total_rows: Optional[int] = None


def _where(cfg: Any) -> str:
    return cfg.hub_id + (f" (config {cfg.hub_config})" if cfg.hub_config else "")


def _token() -> Optional[str]:
    from ..profiles import hf_token

    return hf_token()


def load_stream(cfg: Any) -> Any:
    """`load_dataset(hub_id, hub_config, split=hub_split, streaming=True)` with every failure made one line."""
    if cfg.hub_id in SCRIPT_DATASETS:
        raise TamrinError(f"{cfg.hub_id} is a dataset loading script, which datasets ≥ 4 refuses to run: use "
                          f"{SCRIPT_DATASETS[cfg.hub_id]} (the default: --set data.hub_id=HuggingFaceM4/the_cauldron "
                          f"--set data.hub_config=clevr) {_FIX_SOURCE}")
    import datasets

    token = _token()
    try:
        return datasets.load_dataset(cfg.hub_id, cfg.hub_config or None, split=cfg.hub_split, streaming=True,
                                     token=token)
    except Exception as e:  # noqa: BLE001 - each known failure becomes one line; anything else is re-raised
        line = _loader_error(e, cfg) or explain(e, cfg.hub_id, repo_type="dataset", has_token=bool(token))
        if line is None:
            raise
        raise TamrinError(f"{line}; {_FIX_SOURCE}") from None


def _loader_error(e: Exception, cfg: Any) -> Optional[str]:
    """`datasets`' own refusals: a loading script, a bad config or split name."""
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    if isinstance(e, RuntimeError) and "scripts are no longer supported" in str(e):
        return (f"{cfg.hub_id} is a dataset loading script, which datasets ≥ 4 refuses to run: use a parquet copy "
                "such as HuggingFaceM4/the_cauldron (config clevr)")
    if isinstance(e, ValueError) and ("BuilderConfig" in str(e) or "Config name is missing" in str(e)):
        return f"bad data.hub_config {cfg.hub_config!r} for {cfg.hub_id}: {msg}"
    if isinstance(e, ValueError) and "split" in str(e).lower():
        return f"bad data.hub_split {cfg.hub_split!r} for {_where(cfg)}: {msg}"
    return None


def check_columns(columns: Optional[list[str]], cfg: Any) -> None:
    """One line listing what was found when the configured columns are not there."""
    if columns is None:
        return
    required = ([cfg.image_column, cfg.texts_column] if cfg.hub_layout == "texts"
                else [cfg.image_column, cfg.question_column, cfg.answer_column])
    missing = [c for c in required if c not in columns]
    if missing:
        keys = {"texts": "data.image_column / data.texts_column",
                "flat": "data.image_column / data.question_column / data.answer_column"}[cfg.hub_layout]
        raise TamrinError(f"{_where(cfg)} has no column {', '.join(map(repr, missing))} (columns found: "
                          f"{', '.join(columns)}): set {keys} (and data.hub_layout) to match")


def split_size(ds: Any, split: str) -> Optional[int]:
    """Rows in the split, as declared by the dataset card (None when it declares nothing)."""
    try:
        splits = ds.info.splits
        return int(splits[split].num_examples) if splits and split in splits and splits[split].num_examples else None
    except (AttributeError, KeyError, TypeError):
        return None


def image_bytes(value: Any) -> Optional[bytes]:
    """The first image's bytes from an undecoded Image cell: {bytes, path}, a list of those, or raw bytes."""
    if isinstance(value, (list, tuple)):
        return image_bytes(value[0]) if value else None
    if isinstance(value, dict):
        if value.get("bytes") is None and value.get("path"):
            try:
                return Path(value["path"]).read_bytes()
            except OSError:
                return None
        return value.get("bytes")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return None


def row_pairs(row: dict, cfg: Any) -> list[tuple[str, str, Any]]:
    """(raw user text, raw assistant text, program) for every QA pair of a row."""
    if cfg.hub_layout == "texts":
        turns = row.get(cfg.texts_column) or []
        return [(t.get(cfg.user_key) or "", t.get(cfg.assistant_key) or "", None) for t in turns if isinstance(t, dict)]
    program = row.get(cfg.program_column) if cfg.program_column else None
    return [(str(row.get(cfg.question_column) or ""), str(row.get(cfg.answer_column) or ""), program)]


def one_line(text: str, n: int = 90) -> str:
    """`text` on one line (line breaks shown as ⏎), cut to `n` characters: a raw row inside a message."""
    one = " ⏎ ".join(line.strip() for line in str(text).splitlines() if line.strip())
    return one if len(one) <= n else one[: n - 1] + "…"


@dataclass
class RowFormatCheck:
    """Judges, once `after_rows` rows have been observed, whether the cleaning reads their format: fewer than
    `EARLY_MIN_KEPT` of their QA pairs turned into CLEVR (question, answer) pairs (or no pair at all) is one line
    and a stop, so a layout the cleaning does not read costs a few hundred rows instead of the whole stream
    (the_cauldron's clevr config: 24 shards, about 13 GB)."""
    cfg: Any
    after_rows: int = EARLY_ROWS
    rows: int = 0
    pairs: int = 0
    kept: int = 0
    not_kept: list[tuple[str, str]] = field(default_factory=list)  # the first two raw pairs the cleaning dropped

    def observe(self, row: dict) -> None:
        if self.rows >= self.after_rows:
            return  # judged already
        self.rows += 1
        for user, assistant, _ in row_pairs(row, self.cfg):
            self.pairs += 1
            if clean_question(user) and clean_answer(assistant) is not None:
                self.kept += 1
            elif len(self.not_kept) < 2:
                self.not_kept.append((user, assistant))
        if self.rows == self.after_rows and (self.kept < EARLY_MIN_KEPT * self.pairs or not self.pairs):
            raise TamrinError(self.message())

    def message(self) -> str:
        from ..provenance import redact

        share = self.kept / self.pairs if self.pairs else 0.0
        shown = "; ".join(f"raw row {i + 1}: {one_line(u, 80)!r} → {one_line(a, 30)!r}"
                          for i, (u, a) in enumerate(self.not_kept)) or "no QA pairs at all"
        return redact(f"{_where(self.cfg)}: the cleaning kept {self.kept} of the {self.pairs} QA pairs in the first "
                      f"{self.rows} rows ({share:.0%}, below {EARLY_MIN_KEPT:.0%}), so the rows are probably in a "
                      f"format it does not read ({shown}); stopped before streaming the rest: run `python build.py "
                      "doctor` (with the same --profile/--set options) to see more rows raw and cleaned, then set "
                      "data.hub_layout and the column keys to match")


def clean_pairs(pairs: list[tuple[str, str, Any]], counts: HubCounts) -> list[dict]:
    out = []
    for user, assistant, program in pairs:
        counts.pairs += 1
        question, answer = clean_question(user), clean_answer(assistant)
        if not question:
            counts.unparsed += 1
        elif answer is None:
            counts.off_vocabulary += 1
        else:
            out.append({"question": question, "answer": answer, "qtype": classify(question, answer, program)})
            continue
        if len(counts.examples_skipped) < 5:
            counts.examples_skipped.append({"user": user[:200], "assistant": assistant[:80]})
    return out


def _rows(stream: Any, cfg: Any, counts: HubCounts, what: str = "streaming") -> Iterator[dict]:
    """The rows of `stream`, with anything the remote stream raises (HTTP, network, parquet) made one line."""
    rows = iter(stream)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as e:  # noqa: BLE001 - each known failure becomes one line
            line = explain(e, cfg.hub_id, repo_type="dataset", has_token=bool(_token()))
            first = str(e).splitlines()[0] if str(e) else ""
            raise TamrinError(f"{what} {_where(cfg)} failed after {counts.rows} rows: "
                              + (line or f"{type(e).__name__}: {first}; check the network and rerun")) from None
        yield row


def _checked_rows(ds: Any, cfg: Any, n_rows: int, counts: HubCounts, what: str) -> Iterator[dict]:
    """The first `n_rows` rows in stored order, undecoded, the configured columns checked on the card and on the
    first row."""
    check_columns(getattr(ds, "column_names", None), cfg)
    for i, row in enumerate(_rows(ds.decode(False).take(n_rows), cfg, counts, what)):
        if i == 0:
            check_columns(list(row), cfg)
        yield row


def iter_images(ds: Any, cfg: Any, counts: HubCounts) -> Iterator[tuple[str, Optional[bytes], list[dict]]]:
    """Shuffle (seeded) and yield (image id, raw image bytes or None, cleaned QA pairs) per row.

    First the row format is judged on the first `EARLY_ROWS` rows in stored order (`RowFormatCheck`). Not on the
    shuffled stream: `IterableDataset.shuffle` fills its buffer from 10 shards at a time (`max_buffer_input_shards`,
    datasets 5.2 iterable_dataset.py), so its first rows already cost a whole row group from each of 10 shards;
    the stored order reads only the row groups that hold the judged rows. A stream that passes costs those rows
    once more (the shuffled stream reads its own)."""
    counts.total_rows = split_size(ds, cfg.hub_split)  # recorded in stats.json when the card declares it
    check = RowFormatCheck(cfg)
    for row in _checked_rows(ds, cfg, EARLY_ROWS, counts, "streaming"):
        check.observe(row)
    for row in _rows(ds.decode(False).shuffle(seed=cfg.seed, buffer_size=cfg.shuffle_buffer), cfg, counts):
        counts.rows += 1
        qas = clean_pairs(row_pairs(row, cfg), counts)
        data = image_bytes(row.get(cfg.image_column))
        # Content-addressed ids: the same picture in two rows is one image (and lands in one split).
        image_id = "clevr_" + hashlib.sha1(data).hexdigest()[:16] if data else f"missing_row{counts.rows:07d}"
        yield image_id, data, qas  # the caller stops once the subset's question target is kept


@dataclass
class Triple:
    question: str
    answer: str
    qtype: str
    image: int = -1  # index into Preview.images (-1: the row had no image)


@dataclass
class Preview(HubCounts):
    """The first rows of the stream as read and as cleaned (what `build.py doctor` shows)."""
    raw: list[tuple[str, str]] = field(default_factory=list)  # (user, assistant) as stored, in order
    cleaned: list[Triple] = field(default_factory=list)
    images: list[bytes] = field(default_factory=list)  # the rows' image bytes (for a tokenized example)

    @property
    def unparsed_share(self) -> float:
        """The share of pairs the cleaning could not turn into a CLEVR (question, answer)."""
        return (self.unparsed + self.off_vocabulary) / self.pairs if self.pairs else 0.0


def preview(cfg: Any, n_rows: int = 20) -> Preview:
    """Read the first `n_rows` rows through the stage's own loader and cleaning (no shuffle: the first rows of
    the first shard), keeping the raw text beside the cleaned triples."""
    out = Preview()
    for row in _checked_rows(load_stream(cfg), cfg, n_rows, out, "reading the first rows of"):
        out.rows += 1
        pairs = row_pairs(row, cfg)
        out.raw.extend((u, a) for u, a, _ in pairs)
        data = image_bytes(row.get(cfg.image_column))
        if data:
            out.images.append(data)
        out.cleaned.extend(Triple(**qa, image=len(out.images) - 1 if data else -1) for qa in clean_pairs(pairs, out))
    return out
