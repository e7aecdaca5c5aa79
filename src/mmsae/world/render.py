"""Rasterise object parts, textures, materials and scene backgrounds with exact boolean masks.

Speed (issue 16): the shipped zoo models were trained on these pixels, so every optimisation here keeps the
output bit-identical (tests/world/test_world_render_reference.py holds the digests). What depends only on
the image size or the scene name is computed once and cached read-only; objects are painted on their own
pixels only (every step of the shading is per pixel, so gathering the pixels changes no value); the random
draws happen in the same order as before.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from .vocab import COLOURS, PARTS

SECONDARY_SHADE = 0.62  # darker shade of the secondary part, so parts are visible as well as masked
TEXTURE_SHADE = 0.5


def _frozen(*arrays: np.ndarray) -> None:
    for a in arrays:
        a.flags.writeable = False  # cached and shared between scenes: a write would corrupt later scenes


@lru_cache(maxsize=8)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of every pixel, int64 as np.mgrid gives them."""
    yy, xx = np.mgrid[0:size, 0:size]
    _frozen(yy, xx)
    return yy, xx


@lru_cache(maxsize=8)
def _unit_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of every pixel as float32 fractions of the image size (the backgrounds' coordinates)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    _frozen(yy, xx)
    return yy, xx


def _pts(cx: float, cy: float, r: float, uv) -> list[tuple[float, float]]:
    return [(cx + u * r, cy + v * r) for u, v in uv]


def _box(cx: float, cy: float, r: float, u0: float, v0: float, u1: float, v1: float) -> list[float]:
    return [cx + u0 * r, cy + v0 * r, cx + u1 * r, cy + v1 * r]


@lru_cache(maxsize=None)
def _star_uv(outer: float = 1.0, inner: float = 0.45) -> tuple[tuple[float, float], ...]:
    pts = []
    for i in range(10):
        rad = outer if i % 2 == 0 else inner
        ang = -math.pi / 2 + i * math.pi / 5
        pts.append((rad * math.cos(ang), rad * math.sin(ang)))
    return tuple(pts)


def _shapes(kind: str, cx: float, cy: float, r: float) -> tuple[list[tuple], list[tuple]]:
    """The ImageDraw calls, (method, xy, *args), that draw the primary and the secondary part of an object."""
    if kind == "star":
        return [("polygon", _pts(cx, cy, r, _star_uv()))], [("ellipse", _box(cx, cy, r, -0.42, -0.42, 0.42, 0.42))]
    if kind == "house":
        return ([("rectangle", _box(cx, cy, r, -0.75, -0.1, 0.75, 1.0))],
                [("polygon", _pts(cx, cy, r, [(0.0, -1.0), (-1.0, -0.1), (1.0, -0.1)]))])
    if kind == "tree":
        return ([("ellipse", _box(cx, cy, r, -0.75, -1.0, 0.75, 0.4))],
                [("rectangle", _box(cx, cy, r, -0.22, 0.0, 0.22, 1.0))])
    if kind == "mushroom":
        return ([("chord", _box(cx, cy, r, -1.0, -0.9, 1.0, 0.7), 180, 360)],
                [("rectangle", _box(cx, cy, r, -0.3, -0.1, 0.3, 1.0))])
    if kind == "car":
        return ([("rectangle", _box(cx, cy, r, -1.0, -0.3, 1.0, 0.45)),
                 ("rectangle", _box(cx, cy, r, -0.5, -0.8, 0.45, -0.3))],
                [("ellipse", _box(cx, cy, r, u - 0.32, 0.3, u + 0.32, 0.94)) for u in (-0.55, 0.55)])
    if kind == "fish":
        return ([("ellipse", _box(cx, cy, r, -0.55, -0.55, 1.0, 0.55))],
                [("polygon", _pts(cx, cy, r, [(-0.35, 0.0), (-1.0, -0.6), (-1.0, 0.6)]))])
    raise ValueError(f"unknown object kind {kind!r}")


def part_masks(kind: str, cx: float, cy: float, r: float, size: int) -> dict[str, np.ndarray]:
    """Full (unoccluded) masks of the two parts of an object; the parts never overlap."""
    primary, secondary = PARTS[kind]
    first, second = _shapes(kind, cx, cy, r)
    # Both parts go onto one 8-bit canvas (1 = primary, 2 = secondary), the part that owns their overlap
    # drawn last. Rasterisation does not depend on the mode, so this gives the pixels of two 1-bit canvases
    # and `&= ~other`, with half the PIL work and no bit unpacking.
    on_top = kind in ("star", "tree")  # the secondary part sits on top of the primary
    order = [(first, 1), (second, 2)] if on_top else [(second, 2), (first, 1)]
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    for calls, value in order:
        for method, xy, *args in calls:
            getattr(draw, method)(xy, *args, fill=value)
    labels = np.asarray(img)
    return {primary: labels == 1, secondary: labels == 2}


def _texture_at(texture: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Which pixels a texture darkens, given their integer offsets from the object's anchor."""
    if texture == "plain":
        return np.zeros(x.shape, dtype=bool)
    # period-4 patterns: every 8-pixel patch of a textured object shows two full periods
    if texture == "striped":
        return ((x + y) // 2) % 2 == 0
    if texture == "dotted":
        return ((x % 4) < 2) & ((y % 4) < 2)
    if texture == "checkered":
        return ((x // 2) + (y // 2)) % 2 == 0
    raise ValueError(f"unknown texture {texture!r}")


def texture_pattern(texture: str, cx: float, cy: float, size: int) -> np.ndarray:
    """Boolean map of the pixels a texture darkens; anchored to the object so it moves with it."""
    yy, xx = _pixel_grid(size)
    return _texture_at(texture, xx - int(cx), yy - int(cy))


@lru_cache(maxsize=None)
def _object_colours(colour: str) -> np.ndarray:
    """float32 rows: the primary part's colour, the secondary part's shade, a glass object's edge."""
    base = np.array(COLOURS[colour], dtype=np.float32)
    rows = np.stack([base, base * SECONDARY_SHADE, np.clip(base * 1.1 + 20, 0, 255)])
    _frozen(rows)
    return rows


@lru_cache(maxsize=256)
def _texture_shade(texture: str, ax: int, ay: int, size: int) -> np.ndarray:
    """Flat float32 factor per pixel of a texture anchored at (ax, ay). Every texture has period 4 in x
    and y, so the anchor only matters mod 4: 16 maps per texture and size cover every object."""
    yy, xx = _pixel_grid(size)
    shade = np.where(_texture_at(texture, xx - ax, yy - ay), TEXTURE_SHADE, 1.0).astype(np.float32).ravel()
    _frozen(shade)
    return shade


@lru_cache(maxsize=8)
def _float_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat row and column of every pixel as float32 (the metal shading's coordinates)."""
    yy, xx = (g.astype(np.float32).ravel() for g in _pixel_grid(size))
    _frozen(yy, xx)
    return yy, xx


def _edge(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def paint_object(
    canvas: np.ndarray,
    parts: dict[str, np.ndarray],
    kind: str,
    colour: str,
    texture: str,
    material: str,
    cx: float,
    cy: float,
    r: float,
) -> None:
    """Paint one object in place onto a float HxWx3 canvas (0..255)."""
    size = canvas.shape[0]
    primary, secondary = PARTS[kind]
    full = parts[primary] | parts[secondary]
    # Work on the object's M pixels only, in the order boolean indexing visits them (flat indices into the
    # canvas seen as (H*W, 3): much cheaper than 2-D boolean indexing); float32 throughout, as on the whole
    # canvas before, so each pixel gets exactly the value the whole-canvas arithmetic gave it.
    idx_M = np.flatnonzero(full)
    pixels = canvas.reshape(-1, 3)  # a view: writes land on the canvas
    colours = _object_colours(colour)
    rgb_M3 = colours[parts[secondary].ravel()[idx_M].view(np.uint8)]  # row 0 primary, row 1 secondary
    if texture != "plain":  # plain multiplies by 1.0, which changes no float
        rgb_M3 *= _texture_shade(texture, int(cx) % 4, int(cy) % 4, size)[idx_M, None]
    if material == "metal":
        yy_P, xx_P = _float_grid(size)
        yy, xx = yy_P[idx_M], xx_P[idx_M]
        t = np.clip(((xx - cx) + (yy - cy)) / (4 * r) + 0.5, 0, 1)
        rgb_M3 *= (1.35 - 0.75 * t)[:, None]
        band = np.abs((xx - cx) - (yy - cy) + 0.3 * r) < 0.18 * r
        rgb_M3[band] = 0.45 * rgb_M3[band] + 0.55 * 255
        pixels[idx_M] = np.clip(rgb_M3, 0, 255)
    elif material == "glass":
        pixels[idx_M] = 0.45 * pixels[idx_M] + 0.55 * rgb_M3
        pixels[np.flatnonzero(_edge(full))] = colours[2]
    elif material == "matte":
        pixels[idx_M] = rgb_M3
    else:
        raise ValueError(f"unknown material {material!r}")


@lru_cache(maxsize=64)
def _backdrop(scene: str, size: int) -> np.ndarray:
    """The part of a scene's look that is the same in every image (float32, or float64 where numpy's
    promotion of the int colour arrays made it so: the sums below must keep those dtypes)."""
    yy, xx = _unit_grid(size)
    if scene == "grass":
        img = np.stack([70 + 0 * xx, 115 + 0 * xx, 50 + 0 * xx], -1)
    elif scene == "sand":
        img = np.stack([205 + 0 * xx, 182 + 0 * xx, 132 + 0 * xx], -1)
    elif scene == "sky":
        top, bottom = np.array([110, 160, 225]), np.array([200, 225, 250])
        img = top + (bottom - top) * yy[..., None]
    elif scene == "night":
        img = np.stack([20 + 0 * xx, 24 + 0 * xx, 58 + 0 * xx], -1)
    elif scene == "wood":
        plank = (np.floor(yy * 6) % 2)[..., None]
        img = np.array([150, 100, 58]) * (1 - plank) + np.array([118, 78, 44]) * plank
    elif scene == "snow":
        img = np.stack([236 + 0 * xx, 239 + 0 * xx, 246 + 0 * xx], -1)
    else:
        raise ValueError(f"unknown scene {scene!r}")
    _frozen(img)
    return img


def background(scene: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A scene's look: each background has its own colours and structure, with per-image noise."""
    img = _backdrop(scene, size)  # validates the name before any random draw, as before
    yy, xx = _unit_grid(size)
    noise = rng.normal(0, 1, (size, size)).astype(np.float32)
    if scene == "grass":
        img = img + (12 * noise + 10 * np.sin(xx * 40 + rng.uniform(0, 6)))[..., None]
    elif scene == "sand":
        img = img + (14 * np.sin(yy * 18 + 3 * np.sin(xx * 6 + rng.uniform(0, 6))) + 4 * noise)[..., None]
    elif scene == "sky":
        img = img.copy()
        cx, cy = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.6)
        cloud = ((xx - cx) / 0.22) ** 2 + ((yy - cy) / 0.09) ** 2 < 1
        img[cloud] = [245, 248, 252]
        img += 3 * noise[..., None]
    elif scene == "night":
        img = img + 4 * noise[..., None]
        stars = rng.random((size, size)) < 0.02
        img[stars] = [230, 230, 210]
    elif scene == "wood":
        img = img + (8 * np.sin(xx * 60 + 4 * noise.cumsum(1) / size))[..., None]
    elif scene == "snow":
        img = img + (6 * noise)[..., None]
    return np.clip(img, 0, 255, out=img).astype(np.float32, copy=False)
