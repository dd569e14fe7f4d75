"""The zip's file name from `zip.name_pattern` and the student's details."""
from __future__ import annotations

import re

from ..schema import REQUIRED_FOR_ZIP

_UNSAFE = re.compile(r"[^\w.\-]+")  # \w keeps letters of any script, digits and "_"


def required_keys(pattern_keys: list[str]) -> list[str]:
    """Student keys the zip needs: the always-required ones plus those its name uses."""
    return list(dict.fromkeys([*REQUIRED_FOR_ZIP, *pattern_keys]))


def missing_keys(student: object, pattern_keys: list[str]) -> list[str]:
    """`student.*` keys that are still empty (the ones the zip refuses without)."""
    return [f"student.{k}" for k in required_keys(pattern_keys) if not str(getattr(student, k, "")).strip()]


def zip_name(pattern: str, student: object) -> str:
    """`pattern` filled from the student's fields; spaces and path characters become `_`; ends in .zip."""
    values = {k: str(v).strip() for k, v in vars(student).items()}
    name = _UNSAFE.sub("_", pattern.format(**values)).strip("._")
    if not name.lower().endswith(".zip"):
        name += ".zip"
    return name
