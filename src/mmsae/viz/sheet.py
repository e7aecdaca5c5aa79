"""Per-feature contact sheets: each top image as original | heatmap | masked, labelled with its activation.

Drawing sees only examples (anything with the fields of `SheetExample`, such as mmsae.index.Example) and PIL
images; mmsae.index.feature_sheet_from_index reads both from an index."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, ImageDraw

from ..io import write_atomic
from .maps import heatmap_overlay, masked_image


class SheetExample(Protocol):
    """What a sheet draws of one top image (the fields of mmsae.index.Example it reads)."""

    rank: int
    sample_id: str
    image_index: int
    max_act: float
    acts: np.ndarray  # float32 [P]: activation on each image token
    box: np.ndarray  # float64 [P, 4]: x0 y0 x1 y1 in original pixels, NaN for pure padding


PAD, TITLE_H, HEADER_H, LABEL_H = 6, 22, 14, 14
COLUMNS = ("original", "heatmap", "masked")


def _label(example: SheetExample) -> str:
    return f"#{example.rank} {example.sample_id}[{example.image_index}] max {example.max_act:.3g}"


def sheet_size(n_examples: int, cell: int = 160) -> tuple[int, int]:
    """(width, height) of a feature sheet with n_examples rows (an empty sheet keeps one line for its note)."""
    rows_h = n_examples * (LABEL_H + cell + PAD) if n_examples else LABEL_H
    return PAD + len(COLUMNS) * (cell + PAD), TITLE_H + HEADER_H + rows_h + PAD


def _fit(image: Image.Image, cell: int) -> Image.Image:
    """Scale to fit a cell x cell square, keeping the aspect; small images are enlarged with hard pixel
    edges so patches stay visible."""
    w, h = image.size
    s = cell / max(w, h)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return image.resize(size, Image.NEAREST if s >= 2 else Image.BILINEAR)


def feature_sheet(examples: list[SheetExample], images: list[Image.Image], title: str = "", cell: int = 160,
                  threshold: float = 0.0, relative: bool = False, alpha: float = 0.5,
                  cmap: str = "inferno") -> Image.Image:
    """One row per top image: the original, the heatmap (one colour scale for the whole feature) and
    the masked image, under a label with its rank, sample and max activation."""
    if len(examples) != len(images):
        raise ValueError(f"{len(examples)} examples but {len(images)} images")
    width, height = sheet_size(len(examples), cell)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((PAD, 4), title, fill=(0, 0, 0))
    for c, name in enumerate(COLUMNS):
        draw.text((PAD + c * (cell + PAD), TITLE_H), name, fill=(90, 90, 90))
    vmax = max((float(np.nanmax(e.acts)) for e in examples if len(e.acts)), default=0.0) or None
    for r, (ex, im) in enumerate(zip(examples, images)):
        y = TITLE_H + HEADER_H + r * (LABEL_H + cell + PAD)
        draw.text((PAD, y), _label(ex), fill=(0, 0, 0))
        panels = (im.convert("RGB"),
                  heatmap_overlay(im, ex.box, ex.acts, alpha=alpha, cmap=cmap, vmax=vmax),
                  masked_image(im, ex.box, ex.acts, threshold=threshold, relative=relative))
        for c, panel in enumerate(panels):
            fitted = _fit(panel, cell)
            x = PAD + c * (cell + PAD)
            sheet.paste(fitted, (x + (cell - fitted.width) // 2, y + LABEL_H + (cell - fitted.height) // 2))
    if not examples:
        draw.text((PAD, TITLE_H + HEADER_H), "no top images", fill=(160, 0, 0))
    return sheet


def save_png(image: Image.Image, path: str | Path) -> Path:
    """Write a PNG atomically (readers never see half a file)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    write_atomic(Path(path), buf.getvalue())
    return Path(path)

