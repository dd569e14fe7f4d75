"""CLEVR-like scene graphs: 3–10 objects on a ground plane, placed without overlap, seen by a fixed camera.

World frame: the ground is z = 0, x grows to the camera's right, y grows away from the camera, z is up. The camera
has no yaw, so CLEVR's spatial relations reduce to coordinates: "left of" = smaller x, "right of" = larger x,
"behind" = larger y (farther), "in front of" = smaller y. A relation between two objects is only *defined* when
they differ by at least `RELATION_MARGIN` along that axis; closer pairs are ambiguous and never asked about.
"""
from __future__ import annotations

import functools
import math
import random
from dataclasses import asdict, dataclass, field

import numpy as np

from ..contract.facts import COLORS, MATERIALS, SHAPES, SIZES

# Half-extent of each size in world units (CLEVR: 0.7 and 0.35).
SIZE_RADIUS: dict[str, float] = {"large": 0.7, "small": 0.35}
RELATIONS: tuple[str, ...] = ("left", "right", "behind", "front")
RELATION_MARGIN = 0.45  # world units: closer along the axis → the relation is ambiguous
PLACE_HALF = 3.0  # objects lie in [-3, 3] × [-3, 3]
MIN_GAP = 0.25  # free ground between two objects
MIN_SCREEN_SEPARATION = 0.85  # projected centres ≥ this × (sum of projected radii): little occlusion
_EXTENT = {"cube": 1.3, "cylinder": 1.1, "sphere": 1.0}  # projected half-width relative to the radius


@dataclass(frozen=True)
class Camera:
    """A pinhole camera at (0, -distance, height) looking at `target`, no roll or yaw."""

    distance: float = 10.5
    height: float = 8.0
    target_y: float = 0.2
    fov_deg: float = 33.0

    def basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return _basis(self)

    def _compute_basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        eye = np.array([0.0, -self.distance, self.height])
        fwd = np.array([0.0, self.target_y, 0.0]) - eye
        fwd /= np.linalg.norm(fwd)
        right = np.cross(fwd, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        up = np.cross(right, fwd)
        return eye, right, up, fwd

    def project(self, points: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        """World points (N, 3) → pixel coordinates (N, 2) in a `size`² image, and their depths (N,)."""
        eye, right, up, fwd = self.basis()
        d = np.asarray(points, dtype=np.float64) - eye
        xc, yc, zc = d @ right, d @ up, d @ fwd
        focal = 0.5 * size / math.tan(math.radians(self.fov_deg) / 2)
        px = np.stack([size / 2 + focal * xc / zc, size / 2 - focal * yc / zc], axis=-1)
        return px, zc

    def eye(self) -> np.ndarray:
        return self.basis()[0]


@functools.lru_cache(maxsize=8)
def _basis(cam: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return cam._compute_basis()


CAMERA = Camera()


@dataclass
class SceneObject:
    shape: str
    color: str
    size: str
    material: str
    x: float
    y: float
    rotation: float  # yaw in degrees (cubes)

    @property
    def radius(self) -> float:
        return SIZE_RADIUS[self.size]

    def attr(self, name: str) -> str:
        return getattr(self, name)


@dataclass
class Scene:
    index: int
    objects: list[SceneObject] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"index": self.index, "objects": [asdict(o) for o in self.objects]}


def relation_holds(a: SceneObject, b: SceneObject, rel: str) -> bool | None:
    """Is `a` <rel> `b`? True/False when clear, None when the pair is within the ambiguity margin."""
    delta = {"left": b.x - a.x, "right": a.x - b.x, "behind": a.y - b.y, "front": b.y - a.y}[rel]
    if abs(delta) < RELATION_MARGIN:
        return None
    return delta > 0


def _screen_circle(x: float, y: float, r: float, shape: str, cam: Camera) -> tuple[float, float, float]:
    """Projected centre (at mid-height) and half-width (u, v, radius), in units of the image side (scalar math:
    this runs for every placement try)."""
    eye, right, up, fwd = _basis_lists(cam)
    focal = 0.5 / math.tan(math.radians(cam.fov_deg) / 2)
    dx, dy, dz = x - eye[0], y - eye[1], r - eye[2]
    zc = dx * fwd[0] + dy * fwd[1] + dz * fwd[2]
    u = focal * (dx * right[0] + dy * right[1] + dz * right[2]) / zc
    v = -focal * (dx * up[0] + dy * up[1] + dz * up[2]) / zc
    return u, v, focal * r * _EXTENT[shape] / zc


@functools.lru_cache(maxsize=8)
def _basis_lists(cam: Camera) -> tuple[list[float], ...]:
    return tuple(v.tolist() for v in cam.basis())


def sample_scene(rng: random.Random, index: int, min_objects: int = 3, max_objects: int = 10,
                 cam: Camera = CAMERA) -> Scene:
    """A random scene of min..max objects with uniformly drawn attributes, placed by rejection sampling:
    objects keep `MIN_GAP` of free ground between them and barely occlude each other on screen."""
    n = rng.randint(min_objects, max_objects)
    while True:  # a crowded attempt starts over with the same object count
        placed: list[tuple[SceneObject, float, float, float, float, float]] = []  # obj, x, y, r, u, v, rs
        for _ in range(n):
            # Attributes are drawn once and only the position is retried, so large objects (harder to fit)
            # are not under-represented.
            size, shape = rng.choice(SIZES), rng.choice(SHAPES)
            color, material = rng.choice(COLORS), rng.choice(MATERIALS)
            r = SIZE_RADIUS[size]
            lim = PLACE_HALF - r
            for _try in range(40):
                x, y = round(rng.uniform(-lim, lim), 3), round(rng.uniform(-lim, lim), 3)
                if any(math.hypot(x - px, y - py) < r + pr + MIN_GAP for _, px, py, pr, _, _, _ in placed):
                    continue
                u, v, rs = _screen_circle(x, y, r, shape, cam)
                if any(math.hypot(u - pu, v - pv) < MIN_SCREEN_SEPARATION * (rs + prs)
                       for _, _, _, _, pu, pv, prs in placed):
                    continue
                obj = SceneObject(shape=shape, color=color, size=size, material=material, x=x, y=y,
                                  rotation=round(rng.uniform(0, 90), 1))
                placed.append((obj, x, y, r, u, v, rs))
                break
            else:
                break
        if len(placed) == n:
            return Scene(index=index, objects=[p[0] for p in placed])
