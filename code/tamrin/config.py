"""Configuration: TOML profile file + optional --config file + configs/student.toml + --set overrides,
validated into one typed section (`schema`) each.

Precedence (later wins): schema defaults < configs/<profile>.toml < --config FILE < configs/student.toml
< --set section.key=value.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import ROOT
from .errors import ConfigError
from .schema import (AblationConfig, BuildConfig, DataConfig, DeriveConfig, EvalConfig, FlowConfig, LoraConfig,
                     MemoryConfig, ModelConfig, ReportConfig, Section, StudentConfig, TrainConfig, ZipConfig,
                     build_section)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# section name -> its schema (order: the README's reference table and `Config.sections`)
SECTIONS: dict[str, type[Section]] = {cls.section: cls for cls in (
    StudentConfig, DataConfig, ModelConfig, LoraConfig, TrainConfig, EvalConfig, MemoryConfig, DeriveConfig,
    AblationConfig, FlowConfig, ReportConfig, ZipConfig, BuildConfig)}

PROFILES = ("paper", "demo")


def section_class(name: str) -> type[Section]:
    return SECTIONS[name]


@dataclass
class Config:
    """The validated configuration of one run."""

    profile: str
    sections: dict[str, Any]
    sources: list[str] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        sections = self.__dict__.get("sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(name)

    def as_dict(self, name: str) -> dict[str, Any]:
        return self.sections[name].model_dump()


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path} — check the path given to --config") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None


def parse_set(item: str) -> tuple[str, str, Any]:
    """`section.key=value` -> (section, key, value); the value is read as a TOML literal when it is one."""
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise ConfigError(f"bad --set '{item}': expected section.key=value, e.g. --set train.lr=2e-4")
    dotted, raw = item.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word: let the field's type decide (and reject it if it does not fit)
    return section, key, value


def _merge(into: dict[str, dict[str, Any]], layer: dict[str, Any], origin: str) -> None:
    for section, values in layer.items():
        if section not in SECTIONS:
            raise ConfigError(f"unknown config section [{section}] in {origin}; sections are: {', '.join(SECTIONS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] in {origin} must be a table of key = value")
        into.setdefault(section, {}).update(values)


def load_config(profile: str, config_file: Path | None = None, overrides: list[str] | tuple = (),
                root: Path = ROOT) -> Config:
    """Load and validate the configuration for a concrete profile ('paper' or 'demo')."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile '{profile}'; allowed: auto, {', '.join(PROFILES)}")
    raw: dict[str, dict[str, Any]] = {}
    sources = []
    layers = [root / "configs" / f"{profile}.toml"]
    if config_file is not None:
        layers.append(Path(config_file))
    student = root / "configs" / "student.toml"
    if student.exists():
        layers.append(student)
    for path in layers:
        _merge(raw, read_toml(path), str(path))
        sources.append(str(path))
    for item in overrides:
        section, key, value = parse_set(item)
        if section not in SECTIONS:
            raise ConfigError(f"unknown config key '{section}.{key}' in --set; sections are: {', '.join(SECTIONS)}")
        raw.setdefault(section, {})[key] = value
        sources.append(f"--set {section}.{key}")
    sections = {name: build_section(name, section_class(name), raw.get(name, {})) for name in SECTIONS}
    return Config(profile=profile, sections=sections, sources=sources)
