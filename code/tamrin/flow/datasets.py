"""The 2-D sources and target of the experiment, as TorchCFM samples them (so the literature's numbers compare).

- `gaussian`: N(0, I).
- `8gaussians`: TorchCFM's `sample_8gaussians` — 8 centres on the circle of radius 5, each with covariance
  sqrt(0.1)·I (TorchCFM passes `math.sqrt(var) * eye` as the *covariance*, so the per-coordinate std is
  0.1^(1/4) ≈ 0.562, not sqrt(0.1)); centres drawn uniformly.
- `moons`: TorchCFM's `sample_moons` = torchdyn's `generate_moons(n, noise=0.2) * 3 - 1`: the two half circles
  at evenly spaced angles (`linspace`), each point shifted by ONE uniform [0, 0.2) draw added to both
  coordinates, then scaled by 3 and shifted by −1.
"""
from __future__ import annotations

import functools

import numpy as np

EIGHT_CENTRES = np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (1 / np.sqrt(2), 1 / np.sqrt(2)),
                          (1 / np.sqrt(2), -1 / np.sqrt(2)), (-1 / np.sqrt(2), 1 / np.sqrt(2)),
                          (-1 / np.sqrt(2), -1 / np.sqrt(2))])


def gaussian(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal((n, 2))


def eight_gaussians(n: int, rng: np.random.Generator, scale: float = 5.0, var: float = 0.1) -> np.ndarray:
    centres = EIGHT_CENTRES[rng.integers(0, 8, size=n)] * scale
    std = np.sqrt(np.sqrt(var))  # covariance sqrt(var)·I, exactly as TorchCFM builds it
    return centres + std * rng.standard_normal((n, 2))


@functools.lru_cache(maxsize=16)
def _moon_curves(n: int) -> np.ndarray:
    """The n points of the two half circles before the noise (the same for every draw of size n: computed once,
    since training draws them at every step)."""
    n_out, n_in = n // 2, n - n // 2
    a_out, a_in = np.linspace(0, np.pi, n_out), np.linspace(0, np.pi, n_in)
    x = np.concatenate([np.cos(a_out), 1 - np.cos(a_in)])
    y = np.concatenate([np.sin(a_out), 1 - np.sin(a_in) - 0.5])
    curves = np.stack([x, y], 1)
    curves.setflags(write=False)
    return curves


def moons(n: int, rng: np.random.Generator, noise: float = 0.2) -> np.ndarray:
    pts = _moon_curves(n) + rng.uniform(0.0, 1.0, size=(n, 1)) * noise
    return pts * 3 - 1


SAMPLERS = {"gaussian": gaussian, "8gaussians": eight_gaussians, "moons": moons}
PAIRS = ("gaussian-moons", "8gaussians-moons")


def split_pair(pair: str) -> tuple[str, str]:
    source, target = pair.split("-", 1)
    return source, target


def sample(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    return SAMPLERS[name](n, rng).astype(np.float32)
