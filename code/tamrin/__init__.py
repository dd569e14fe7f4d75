"""Tamrin: a reproducible answer to homework 4 of Deep Generative Models (University of Tehran)."""
from pathlib import Path

__version__ = "0.1.0"

# The repository root: build.py, configs/, templates/ and the generated results/ live here.
ROOT = Path(__file__).resolve().parents[2]
