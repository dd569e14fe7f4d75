"""The synthetic source: CLEVR-like scenes of 3–10 objects on a ground plane, rendered, with template questions.

World frame: ground z = 0, x to the camera's right, y away from it, z up; the camera has no yaw, so CLEVR's spatial
relations reduce to coordinates (`questions.relation_holds`). Scene i of seed s has its own `random.Random` (it
does not depend on the scenes before it); question types rotate across scenes so all 8 appear equally often.
The renderer draws CLEVR's look at 2× and box-filters down: shaded polygons per cube/cylinder face, spheres shaded
per pixel, metal with sharp highlights, rubber matte, soft shadows, far to near. Pure PIL + numpy, a few ms a scene.
"""
from __future__ import annotations

import functools
import io
import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..contract.facts import COLORS, MATERIALS, QTYPES, SHAPES, SIZES
from .questions import Question, SceneQuestions

# Half-extent of each size in world units (CLEVR: 0.7 and 0.35).
SIZE_RADIUS: dict[str, float] = {"large": 0.7, "small": 0.35}
PLACE_HALF = 3.0  # objects lie in [-3, 3] × [-3, 3]
MIN_GAP = 0.25  # free ground between two objects
MIN_SCREEN_SEPARATION = 0.85  # projected centres ≥ this × (sum of projected radii): little occlusion
_EXTENT = {"cube": 1.3, "cylinder": 1.1, "sphere": 1.0}  # projected half-width relative to the radius
FOV_DEG = 33.0


# The pinhole camera: at EYE, looking at (0, 0.2, 0), no roll or yaw.
EYE = np.array([0.0, -10.5, 8.0])
FWD = np.array([0.0, 0.2, 0.0]) - EYE
FWD /= np.linalg.norm(FWD)
RIGHT = np.cross(FWD, [0.0, 0.0, 1.0])
RIGHT /= np.linalg.norm(RIGHT)
UP = np.cross(RIGHT, FWD)
_CAMERA_LISTS = tuple(v.tolist() for v in (EYE, RIGHT, UP, FWD))  # for the scalar math of scene placement


def project(points: np.ndarray, size: int) -> np.ndarray:
    """World points (N, 3) → pixel coordinates (N, 2) in a `size`² image."""
    d = np.asarray(points, dtype=np.float64) - EYE
    xc, yc, zc = d @ RIGHT, d @ UP, d @ FWD
    focal = 0.5 * size / math.tan(math.radians(FOV_DEG) / 2)
    return np.stack([size / 2 + focal * xc / zc, size / 2 - focal * yc / zc], axis=-1)


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


def _screen_circle(x: float, y: float, r: float, shape: str) -> tuple[float, float, float]:
    """Projected centre (at mid-height) and half-width (u, v, radius), in units of the image side (scalar math:
    this runs for every placement try)."""
    eye, right, up, fwd = _CAMERA_LISTS
    focal = 0.5 / math.tan(math.radians(FOV_DEG) / 2)
    dx, dy, dz = x - eye[0], y - eye[1], r - eye[2]
    zc = dx * fwd[0] + dy * fwd[1] + dz * fwd[2]
    u = focal * (dx * right[0] + dy * right[1] + dz * right[2]) / zc
    v = -focal * (dx * up[0] + dy * up[1] + dz * up[2]) / zc
    return u, v, focal * r * _EXTENT[shape] / zc


def sample_scene(rng: random.Random, min_objects: int = 3, max_objects: int = 10) -> list[SceneObject]:
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
                u, v, rs = _screen_circle(x, y, r, shape)
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
            return [p[0] for p in placed]


# CLEVR's colours (its properties.json), RGB 0–255.
RGB: dict[str, tuple[int, int, int]] = {
    "gray": (87, 87, 87), "red": (173, 35, 35), "blue": (42, 75, 215), "green": (29, 105, 20),
    "brown": (129, 74, 25), "purple": (129, 38, 192), "cyan": (41, 208, 208), "yellow": (255, 238, 51),
}
SUPERSAMPLE = 2
_LIGHT = np.array([-0.45, -0.4, 0.8]) / np.linalg.norm([-0.45, -0.4, 0.8])  # towards the key light
_AMBIENT = 0.38
_SHADOW_DARKNESS = 0.5
# (diffuse weight, specular weight, specular exponent)
_MATERIAL = {"rubber": (0.75, 0.06, 6.0), "metal": (0.55, 0.95, 45.0)}
_CYL_SEGMENTS = 24


def _shade(base: np.ndarray, normals: np.ndarray, views: np.ndarray, material: str) -> np.ndarray:
    """Flat colours (N, 3), 0–255 float RGB, of faces with world normals (N, 3) seen along `views` (to the eye)."""
    kd, ks, p = _MATERIAL[material]
    diffuse = np.clip(normals @ _LIGHT, 0, None)
    half = _LIGHT + views
    half /= np.linalg.norm(half, axis=1, keepdims=True)
    # Flat faces can't show a sharp highlight, so they get a broad one (lower exponent).
    spec = np.clip(np.einsum("ij,ij->i", normals, half), 0, None) ** (p / 6)
    return np.clip(base * (_AMBIENT + kd * diffuse)[:, None] + (255 * ks * 0.55 * spec)[:, None], 0, 255)


@functools.lru_cache(maxsize=4)
def _floor(size: int) -> tuple[Image.Image, Image.Image]:
    """The lit floor and the same floor in shadow, as `size`² RGB images (cached per size)."""
    v, u = np.mgrid[0:size, 0:size].astype(np.float32) / size
    # Brighter where the key light falls (upper left of the centre), darker towards the far corners.
    glow = np.exp(-(((u - 0.42) / 0.55) ** 2 + ((v - 0.45) / 0.6) ** 2))
    level = 0.40 + 0.16 * glow + 0.05 * v
    lit = np.repeat((level * 255)[..., None], 3, axis=2)
    lit[..., 2] *= 1.01  # CLEVR's floor is a faintly cool grey
    lit = np.clip(lit, 0, 255).astype(np.uint8)
    dark = (lit.astype(np.float32) * (1 - _SHADOW_DARKNESS)).astype(np.uint8)
    return Image.fromarray(lit), Image.fromarray(dark)


def _circle(cx: float, cy: float, r: float, z: float = 0.0, n: int = 20) -> np.ndarray:
    """n points (n, 3) on the horizontal circle of radius r around (cx, cy) at height z."""
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t), np.full(n, z)], 1)


_SHADOW_RES = 4  # the shadow mask is drawn at 1/4 of the render size and blurred there


def _floor_with_shadows(scene: list[SceneObject], big: int) -> Image.Image:
    """The floor with soft shadows, at the render size `big`.

    Shadows are each object's footprint swept away from the light, drawn on a small mask and blurred. The floor
    is smooth, so it is composed at the output size (big / SUPERSAMPLE) and enlarged by pixel repetition: the
    final box-filter reduction gives those floor pixels back exactly.
    """
    out = big // SUPERSAMPLE
    small = big // _SHADOW_RES
    mask = Image.new("L", (small, small), 0)
    draw = ImageDraw.Draw(mask)
    sweep = -_LIGHT[:2] / _LIGHT[2]
    rings = []
    for o in scene:
        r = o.radius
        height = r if o.shape == "sphere" else 1.6 * r
        start = np.array([o.x, o.y])
        end = start + sweep * height
        for cx, cy in (start, (start + end) / 2, end):
            rings.append(_circle(cx, cy, r * 0.95, n=16))
    if rings:
        px = project(np.concatenate(rings), small)
        for ring in px.reshape(len(rings), -1).tolist():
            draw.polygon(ring, fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(radius=small * 0.014)).resize((out, out), Image.BILINEAR)
    lit, dark = _floor(out)
    return Image.composite(dark, lit, mask).resize((big, big), Image.NEAREST)


def _view_dir(point: np.ndarray) -> np.ndarray:
    v = EYE - point
    return v / np.linalg.norm(v)


def _fill_face(img: Image.Image, draw: ImageDraw.ImageDraw, poly: np.ndarray, colour: np.ndarray, metal: bool,
               highlight_at: np.ndarray) -> None:
    """Fill a projected face. Metal faces get a smooth highlight that brightens towards `highlight_at` (a flat
    mirror-like face lit by the environment, which flat Blinn-Phong alone cannot show)."""
    if not metal:
        draw.polygon(poly.ravel().tolist(), fill=tuple(np.rint(colour).astype(int).tolist()))
        return
    x0, y0 = np.floor(poly.min(axis=0)).astype(int)
    x1, y1 = np.ceil(poly.max(axis=0)).astype(int) + 1
    mask = Image.new("L", (int(x1 - x0), int(y1 - y0)), 0)
    ImageDraw.Draw(mask).polygon((poly - [x0, y0]).ravel().tolist(), fill=255)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    reach = float(np.linalg.norm(poly - highlight_at, axis=1).max()) or 1.0
    near = np.clip(1 - np.hypot(xx - highlight_at[0], yy - highlight_at[1]) / reach, 0, 1) ** 2
    base = colour.astype(np.float32)
    patch = base + (255 - base) * (0.45 * near)[..., None]
    img.paste(Image.fromarray(np.clip(patch, 0, 255).astype(np.uint8)), (int(x0), int(y0)), mask)


# Cube faces as corner indices into the 8 corners (sx, sy, sz ∈ {-1, 1}, index = 4·ix + 2·iy + iz),
# with local outward normals.
_CUBE_FACES = np.array([(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)])
_CUBE_NORMALS = np.array([(-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1)], dtype=float)
_CUBE_CORNERS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)


def _draw_cube(img: Image.Image, draw: ImageDraw.ImageDraw, o: SceneObject, size: int) -> None:
    r = o.radius
    a = math.radians(o.rotation)
    rot = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    world = _CUBE_CORNERS * r @ rot.T + [o.x, o.y, r]
    px = project(world, size)
    normals = _CUBE_NORMALS @ rot.T
    centres = world[_CUBE_FACES].mean(axis=1)
    views = EYE - centres
    views /= np.linalg.norm(views, axis=1, keepdims=True)
    visible = np.einsum("ij,ij->i", normals, views) > 1e-6
    colours = _shade(np.array(RGB[o.color], dtype=float), normals[visible], views[visible], o.material)
    for idx, colour in zip(_CUBE_FACES[visible], colours):
        poly = px[idx]
        # The highlight sits on the face corner nearest the light, pulled towards the face centre.
        corner = int(np.argmax(world[idx] @ _LIGHT))
        _fill_face(img, draw, poly, colour, o.material == "metal", poly[corner] * 0.5 + poly.mean(axis=0) * 0.5)


def _draw_cylinder(img: Image.Image, draw: ImageDraw.ImageDraw, o: SceneObject, size: int) -> None:
    r, h = o.radius, 2 * o.radius
    n = _CYL_SEGMENTS
    bottom = _circle(o.x, o.y, r, 0.0, n)
    top = _circle(o.x, o.y, r, h, n)
    proj = project(np.concatenate([bottom, top]), size)
    pb, pt = proj[:n], proj[n:]
    nxt = np.roll(np.arange(n), -1)
    mids = (bottom + bottom[nxt]) / 2 + [0, 0, h / 2]
    normals = mids - [o.x, o.y, h / 2]
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    views = EYE - mids
    views /= np.linalg.norm(views, axis=1, keepdims=True)
    visible = np.einsum("ij,ij->i", normals, views) > 0
    base = np.array(RGB[o.color], dtype=float)
    colours = _shade(base, normals[visible], views[visible], o.material)
    if o.material == "metal":
        # A sharp vertical highlight stripe where the side's azimuth faces the (horizontal) half vector.
        half = _LIGHT + views[visible]
        half[:, 2] = 0
        half /= np.linalg.norm(half, axis=1, keepdims=True)
        stripe = np.clip(np.einsum("ij,ij->i", normals[visible], half), 0, None) ** 30
        colours = np.clip(colours + 255 * 0.75 * stripe[:, None], 0, 255)
    idx = np.flatnonzero(visible)
    quads = np.stack([pb[idx], pb[nxt[idx]], pt[nxt[idx]], pt[idx]], axis=1).reshape(len(idx), 8).tolist()
    for quad, colour in zip(quads, np.rint(colours).astype(int).tolist()):
        draw.polygon(quad, fill=tuple(colour))
    cap_view = _view_dir(np.array([o.x, o.y, h]))[None]
    colour = _shade(base, np.array([[0.0, 0.0, 1.0]]), cap_view, o.material)[0]
    toward_light = pt[int(np.argmax(top @ _LIGHT))]
    _fill_face(img, draw, pt, colour, o.material == "metal", toward_light * 0.5 + pt.mean(axis=0) * 0.5)


def _paste_sphere(img: Image.Image, o: SceneObject, size: int) -> None:
    r = o.radius
    centre_w = np.array([o.x, o.y, r])
    pts = project(np.stack([centre_w, centre_w + [r, 0, 0], centre_w + [0, 0, r]]), size)
    cx, cy = pts[0]
    rad = 0.5 * (np.linalg.norm(pts[1] - pts[0]) + np.linalg.norm(pts[2] - pts[0]))
    x0, y0 = int(math.floor(cx - rad - 1)), int(math.floor(cy - rad - 1))
    x1, y1 = int(math.ceil(cx + rad + 1)), int(math.ceil(cy + rad + 1))
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = (xx + 0.5 - cx) / rad, (yy + 0.5 - cy) / rad
    d2 = dx * dx + dy * dy
    nz = np.sqrt(np.clip(1 - d2, 0, 1))
    view = _view_dir(centre_w)
    # World normal of each pixel: screen x → right, screen y (down) → -up, towards the viewer → view.
    light_s = np.array([_LIGHT @ RIGHT, -(_LIGHT @ UP), _LIGHT @ view], dtype=np.float32)
    half = _LIGHT + view
    half /= np.linalg.norm(half)
    half_s = np.array([half @ RIGHT, -(half @ UP), half @ view], dtype=np.float32)
    ndotl = np.clip(dx * light_s[0] + dy * light_s[1] + nz * light_s[2], 0, 1)
    ndoth = np.clip(dx * half_s[0] + dy * half_s[1] + nz * half_s[2], 0, 1)
    kd, ks, p = _MATERIAL[o.material]
    base = np.array(RGB[o.color], dtype=np.float32)
    colour = base * (_AMBIENT + kd * ndotl)[..., None] + (255 * ks * ndoth ** p)[..., None]
    if o.material == "metal":  # the grey floor mirrored in the lower rim
        colour += (60 * np.clip(dy, 0, 1) * (1 - nz))[..., None]
    rgb = np.clip(colour, 0, 255).astype(np.uint8)
    alpha = np.clip((1 - np.sqrt(d2)) * rad + 0.5, 0, 1)
    img.paste(Image.fromarray(rgb), (x0, y0), Image.fromarray((alpha * 255).astype(np.uint8)))


def render(scene: list[SceneObject], size: int) -> Image.Image:
    """The scene as a `size`² RGB image."""
    big = size * SUPERSAMPLE
    img = _floor_with_shadows(scene, big)
    draw = ImageDraw.Draw(img)
    for o in sorted(scene, key=lambda o: -math.hypot(o.x - EYE[0], o.y - EYE[1])):
        if o.shape == "sphere":
            _paste_sphere(img, o, big)
        elif o.shape == "cube":
            _draw_cube(img, draw, o, big)
        else:
            _draw_cylinder(img, draw, o, big)
    return img.reduce(SUPERSAMPLE)


def png_bytes(img: Image.Image) -> bytes:
    """Lossless 8-bit RGB PNG through Pillow at zlib level 1 (generation speed matters more than a few kB here).
    A hand-written encoder used to sit here; bench/bench_png.py measured what it saved (bench/results/png_encode.json)."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


@dataclass
class SyntheticScene:
    image_id: str
    scene: list[SceneObject]
    png: bytes
    questions: list[Question]


def scene_rng(seed: int, index: int) -> random.Random:
    return random.Random(f"tamrin-synthetic:{seed}:{index}")


def make_scene(seed: int, index: int, *, image_size: int, questions_per_scene: int, min_objects: int,
               max_objects: int) -> SyntheticScene:
    """Scene `index` of `seed` with distinct questions whose types rotate across scenes (from QTYPES[index ·
    questions_per_scene]); a type that fails in this scene is replaced by the next."""
    rng = scene_rng(seed, index)
    scene = sample_scene(rng, min_objects, max_objects)
    gen, questions = SceneQuestions(scene, rng), []
    for attempt in range(questions_per_scene * 4):
        if len(questions) == questions_per_scene:
            break
        qtype = QTYPES[(index * questions_per_scene + attempt) % len(QTYPES)]
        q = gen.ask(qtype, avoid={asked.question for asked in questions})
        if q is not None:
            questions.append(q)
    return SyntheticScene(image_id=f"synth_s{seed}_{index:06d}", scene=scene,
                          png=png_bytes(render(scene, image_size)), questions=questions)
