#!/usr/bin/env python3
"""Tamrin entry point: `python build.py <command> [options]` (see `--help`)."""
import sys
from pathlib import Path

# `code/` is the source root; it is never a package itself (it would shadow the stdlib module `code`).
sys.path.insert(0, str(Path(__file__).resolve().parent / "code"))

from tamrin.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
