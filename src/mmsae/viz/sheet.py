"""Per-feature contact sheets: each top image as original | heatmap | masked, labelled with its activation.

Drawing sees only Examples and PIL images; `feature_sheet_from_index` reads both through mmsae.index."""

from __future__ import annotations

import io
from contextlib import closing
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..index.read import Example, example_image, feature_examples, feature_stats, index_source, open_index, read_meta
from ..io import write_atomic
from .maps import heatmap_overlay, masked_image

PAD, TITLE_H, HEADER_H, LABEL_H = 6, 22, 14, 14
COLUMNS = ("original", "heatmap", "masked")


def _label(example: Example) -> str:
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


def feature_sheet(examples: list[Example], images: list[Image.Image], title: str = "", cell: int = 160,
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


def feature_sheet_from_index(index_dir: str | Path, feature: int, source=None, n: int | None = None,
                             **sheet_options) -> Image.Image:
    """The contact sheet of one feature read from an index (its n strongest top images; all by default).

    `source` replaces the index's data source (a spec string or an opened Source), e.g. moved files."""
    with closing(open_index(index_dir)) as con:
        stats = feature_stats(con, feature)  # a clear error for a feature the index does not have
        meta = read_meta(con)
        examples = feature_examples(con, feature, n)
    src = index_source(meta, source)
    images = [example_image(src, e) for e in examples]
    title = (f"feature {feature}  freq {stats.frequency or 0:.3g}  max {stats.max_act or 0:.3g}  "
             f"image share {stats.image_share or 0:.2f}  layer {meta.get('layer', '?')}")
    return feature_sheet(examples, images, title=title, **sheet_options)
