"""Rasterise object parts, textures, materials and scene backgrounds with exact boolean masks."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from .vocab import COLOURS, PARTS

SECONDARY_SHADE = 0.62  # darker shade of the secondary part, so parts are visible as well as masked
TEXTURE_SHADE = 0.5


def _canvas(size: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("1", (size, size), 0)
    return img, ImageDraw.Draw(img)


def _pts(cx: float, cy: float, r: float, uv: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(cx + u * r, cy + v * r) for u, v in uv]


def _box(cx: float, cy: float, r: float, u0: float, v0: float, u1: float, v1: float) -> list[float]:
    return [cx + u0 * r, cy + v0 * r, cx + u1 * r, cy + v1 * r]


def _star_uv(outer: float = 1.0, inner: float = 0.45) -> list[tuple[float, float]]:
    pts = []
    for i in range(10):
        rad = outer if i % 2 == 0 else inner
        ang = -math.pi / 2 + i * math.pi / 5
        pts.append((rad * math.cos(ang), rad * math.sin(ang)))
    return pts


def part_masks(kind: str, cx: float, cy: float, r: float, size: int) -> dict[str, np.ndarray]:
    """Full (unoccluded) masks of the two parts of an object; the parts never overlap."""
    primary, secondary = PARTS[kind]
    a, da = _canvas(size)
    b, db = _canvas(size)
    if kind == "star":
        da.polygon(_pts(cx, cy, r, _star_uv()), fill=1)
        db.ellipse(_box(cx, cy, r, -0.42, -0.42, 0.42, 0.42), fill=1)
    elif kind == "house":
        da.rectangle(_box(cx, cy, r, -0.75, -0.1, 0.75, 1.0), fill=1)
        db.polygon(_pts(cx, cy, r, [(0.0, -1.0), (-1.0, -0.1), (1.0, -0.1)]), fill=1)
    elif kind == "tree":
        da.ellipse(_box(cx, cy, r, -0.75, -1.0, 0.75, 0.4), fill=1)
        db.rectangle(_box(cx, cy, r, -0.22, 0.0, 0.22, 1.0), fill=1)
    elif kind == "mushroom":
        da.chord(_box(cx, cy, r, -1.0, -0.9, 1.0, 0.7), 180, 360, fill=1)
        db.rectangle(_box(cx, cy, r, -0.3, -0.1, 0.3, 1.0), fill=1)
    elif kind == "car":
        da.rectangle(_box(cx, cy, r, -1.0, -0.3, 1.0, 0.45), fill=1)
        da.rectangle(_box(cx, cy, r, -0.5, -0.8, 0.45, -0.3), fill=1)
        for u in (-0.55, 0.55):
            db.ellipse(_box(cx, cy, r, u - 0.32, 0.3, u + 0.32, 0.94), fill=1)
    elif kind == "fish":
        da.ellipse(_box(cx, cy, r, -0.55, -0.55, 1.0, 0.55), fill=1)
        db.polygon(_pts(cx, cy, r, [(-0.35, 0.0), (-1.0, -0.6), (-1.0, 0.6)]), fill=1)
    else:
        raise ValueError(f"unknown object kind {kind!r}")
    ma, mb = np.array(a, dtype=bool), np.array(b, dtype=bool)
    if kind in ("star", "tree"):  # the secondary part sits on top of the primary
        ma &= ~mb
    else:
        mb &= ~ma
    return {primary: ma, secondary: mb}


def texture_pattern(texture: str, cx: float, cy: float, size: int) -> np.ndarray:
    """Boolean map of the pixels a texture darkens; anchored to the object so it moves with it."""
    yy, xx = np.mgrid[0:size, 0:size]
    x, y = xx - int(cx), yy - int(cy)
    if texture == "plain":
        return np.zeros((size, size), dtype=bool)
    # period-4 patterns: every 8-pixel patch of a textured object shows two full periods
    if texture == "striped":
        return ((x + y) // 2) % 2 == 0
    if texture == "dotted":
        return ((x % 4) < 2) & ((y % 4) < 2)
    if texture == "checkered":
        return ((x // 2) + (y // 2)) % 2 == 0
    raise ValueError(f"unknown texture {texture!r}")


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
    base = np.array(COLOURS[colour], dtype=np.float32)
    primary, secondary = PARTS[kind]
    rgb = np.zeros_like(canvas)
    rgb[parts[primary]] = base
    rgb[parts[secondary]] = base * SECONDARY_SHADE
    full = parts[primary] | parts[secondary]
    shade = np.where(texture_pattern(texture, cx, cy, size), TEXTURE_SHADE, 1.0).astype(np.float32)
    rgb *= shade[..., None]
    if material == "metal":
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        t = np.clip(((xx - cx) + (yy - cy)) / (4 * r) + 0.5, 0, 1)
        rgb *= (1.35 - 0.75 * t)[..., None]
        band = np.abs((xx - cx) - (yy - cy) + 0.3 * r) < 0.18 * r
        rgb[band] = 0.45 * rgb[band] + 0.55 * 255
        canvas[full] = np.clip(rgb[full], 0, 255)
    elif material == "glass":
        canvas[full] = 0.45 * canvas[full] + 0.55 * rgb[full]
        edge = _edge(full)
        canvas[edge] = np.clip(base * 1.1 + 20, 0, 255)
    elif material == "matte":
        canvas[full] = rgb[full]
    else:
        raise ValueError(f"unknown material {material!r}")


def background(scene: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A scene's look: each background has its own colours and structure, with per-image noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    noise = rng.normal(0, 1, (size, size)).astype(np.float32)
    if scene == "grass":
        img = np.stack([70 + 0 * xx, 115 + 0 * xx, 50 + 0 * xx], -1)
        img += (12 * noise + 10 * np.sin(xx * 40 + rng.uniform(0, 6)))[..., None]
    elif scene == "sand":
        img = np.stack([205 + 0 * xx, 182 + 0 * xx, 132 + 0 * xx], -1)
        img += (14 * np.sin(yy * 18 + 3 * np.sin(xx * 6 + rng.uniform(0, 6))) + 4 * noise)[..., None]
    elif scene == "sky":
        top, bottom = np.array([110, 160, 225]), np.array([200, 225, 250])
        img = top + (bottom - top) * yy[..., None]
        cx, cy = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.6)
        cloud = ((xx - cx) / 0.22) ** 2 + ((yy - cy) / 0.09) ** 2 < 1
        img[cloud] = [245, 248, 252]
        img += 3 * noise[..., None]
    elif scene == "night":
        img = np.stack([20 + 0 * xx, 24 + 0 * xx, 58 + 0 * xx], -1) + 4 * noise[..., None]
        stars = rng.random((size, size)) < 0.02
        img[stars] = [230, 230, 210]
    elif scene == "wood":
        plank = (np.floor(yy * 6) % 2)[..., None]
        img = np.array([150, 100, 58]) * (1 - plank) + np.array([118, 78, 44]) * plank
        img += (8 * np.sin(xx * 60 + 4 * noise.cumsum(1) / size))[..., None]
    elif scene == "snow":
        img = np.stack([236 + 0 * xx, 239 + 0 * xx, 246 + 0 * xx], -1) + (6 * noise)[..., None]
    else:
        raise ValueError(f"unknown scene {scene!r}")
    return np.clip(img, 0, 255).astype(np.float32)
