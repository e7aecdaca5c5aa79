"""Per-token activations painted back onto the original image: activation maps, heatmaps, masked images.

Boxes are the token table's pixel boxes in the ORIGINAL image (x0, y0, x1, y1; NaN for tokens that
cover no pixel), so every model family and every tile of a multi-tile (AnyRes) image lands in the same
pixel space; where boxes overlap (a base view and its high-resolution tiles) the maximum wins.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def _as_boxes(boxes_N4, acts_N) -> tuple[np.ndarray, np.ndarray]:
    box_N4 = np.asarray(boxes_N4, dtype=np.float64).reshape(-1, 4)
    act_N = np.asarray(acts_N, dtype=np.float64).reshape(-1)
    if len(box_N4) != len(act_N):
        raise ValueError(f"{len(box_N4)} boxes but {len(act_N)} activations")
    return box_N4, act_N


def _span(lo: float, hi: float, limit: int) -> tuple[int, int]:
    """Pixels whose centre lies in [lo, hi): adjacent boxes tile the image without gaps or overlap.
    A box narrower than a pixel still paints the pixel holding its centre."""
    a = int(np.floor(lo + 0.5))
    b = int(np.floor(hi + 0.5))
    if b <= a:
        a = int(np.floor((lo + hi) / 2))
        b = a + 1
    return max(a, 0), min(b, limit)


def activation_map(size: tuple[int, int], boxes_N4, acts_N) -> np.ndarray:
    """float32 H x W map: each pixel holds the largest activation of the boxes covering it, 0 elsewhere.

    `size` is the original image's (width, height), as PIL reports it."""
    width, height = size
    box_N4, act_N = _as_boxes(boxes_N4, acts_N)
    map_HW = np.zeros((height, width), dtype=np.float32)
    for (x0, y0, x1, y1), a in zip(box_N4, act_N):
        if not np.isfinite(a) or a <= 0 or not np.all(np.isfinite((x0, y0, x1, y1))) or x1 <= x0 or y1 <= y0:
            continue  # text/special tokens have no box; non-positive values paint nothing over the 0 floor
        c0, c1 = _span(x0, x1, width)
        r0, r1 = _span(y0, y1, height)
        if c1 > c0 and r1 > r0:
            np.maximum(map_HW[r0:r1, c0:c1], a, out=map_HW[r0:r1, c0:c1])
    return map_HW


def visible_mask(size: tuple[int, int], boxes_N4, acts_N, threshold: float = 0.0, relative: bool = False) -> np.ndarray:
    """bool H x W: pixels of patches whose activation exceeds the threshold.

    relative=True reads `threshold` as a fraction of this image's largest activation (0.2 keeps the
    patches firing above a fifth of the peak); otherwise it is an absolute activation value."""
    _, act_N = _as_boxes(boxes_N4, acts_N)
    if relative and not 0.0 <= threshold < 1.0:
        raise ValueError(f"a relative threshold is a fraction of the peak in [0, 1); got {threshold}")
    map_HW = activation_map(size, boxes_N4, acts_N)
    peak = float(np.nanmax(act_N)) if len(act_N) else 0.0
    cut = threshold * max(peak, 0.0) if relative else threshold
    return map_HW > cut


def masked_image(image: Image.Image, boxes_N4, acts_N, threshold: float = 0.0, relative: bool = False,
                 dim: float = 0.0) -> Image.Image:
    """The paper's masked image: pixels of activated patches as they are, every other pixel black.

    `dim` keeps that fraction of the brightness of inactive pixels instead (the paper's code used ~0.12);
    0 is the paper's text: fully black."""
    if not 0.0 <= dim <= 1.0:
        raise ValueError(f"dim must be in [0, 1]; got {dim}")
    rgb_HWC = np.asarray(image.convert("RGB"), dtype=np.float32)
    keep_HW = visible_mask(image.size, boxes_N4, acts_N, threshold, relative)
    out_HWC = np.where(keep_HW[..., None], rgb_HWC, rgb_HWC * dim)
    return Image.fromarray(np.round(out_HWC).astype(np.uint8))


def heatmap_overlay(image: Image.Image, boxes_N4, acts_N, alpha: float = 0.5, cmap: str = "inferno",
                    vmax: float | None = None) -> Image.Image:
    """The activation map coloured with `cmap` and blended over the image (same size as the image).

    Values are scaled by `vmax` (default: this image's peak); pass the feature's max activation to
    put all top images of a feature on one scale."""
    from matplotlib import colormaps

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}")
    if cmap not in colormaps:
        raise ValueError(f"unknown colormap {cmap!r}")
    map_HW = activation_map(image.size, boxes_N4, acts_N)
    top = float(map_HW.max()) if vmax is None else float(vmax)
    norm_HW = np.clip(map_HW / top, 0.0, 1.0) if top > 0 else np.zeros_like(map_HW)
    colour_HWC = colormaps[cmap](norm_HW)[..., :3] * 255.0
    rgb_HWC = np.asarray(image.convert("RGB"), dtype=np.float32)
    out_HWC = (1.0 - alpha) * rgb_HWC + alpha * colour_HWC
    return Image.fromarray(np.round(out_HWC).clip(0, 255).astype(np.uint8))
