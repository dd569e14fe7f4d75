"""One console style for every stage (`[stage] message`), a per-stage log file, and secret redaction everywhere."""
from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .provenance import redact

LOGGER = "tamrin"


def _redact(record: logging.LogRecord) -> bool:
    """A handler filter (any callable is one): the record's message, redacted."""
    record.msg, record.args = redact(record.getMessage()), ()
    return True


class _Console(logging.Handler):
    """`[stage] message` on stderr, written through tqdm so progress bars stay intact."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        stage = record.name.split(".", 1)[1] if "." in record.name else "tamrin"
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        tqdm.write(f"[{stage}] {level}{record.getMessage()}", file=sys.stderr)


def setup_console(verbose: bool = False) -> None:
    log = logging.getLogger(LOGGER)
    if not any(isinstance(h, _Console) for h in log.handlers):
        console = _Console()
        console.addFilter(_redact)
        log.addHandler(console)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


def stage_logger(stage: str) -> logging.Logger:
    """The logger a stage writes to: `tamrin.<stage>`, printed as `[stage] message`."""
    return logging.getLogger(f"{LOGGER}.{stage}")


@contextmanager
def log_to_file(stage: str, path: Path) -> Iterator[None]:
    """Inside the block, also write the stage's log lines (timestamped) to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h = logging.FileHandler(path, encoding="utf-8")
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    h.addFilter(_redact)
    stage_logger(stage).addHandler(h)
    try:
        yield
    finally:
        stage_logger(stage).removeHandler(h)
        h.close()
