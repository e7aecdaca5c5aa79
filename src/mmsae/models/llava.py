"""LLaVA-1.5 and LLaVA-NeXT (AnyRes): geometry of their CLIP-style processors."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from .base import Adapter, AdapterError
from .table import Affine, ImageTokens


def _size_get(size, key):
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def _resized_hw(h: int, w: int, size) -> tuple[int, int]:
    """Output size of the PIL backend's `resize` for a size dict (shortest_edge or height/width)."""
    se = _size_get(size, "shortest_edge")
    if se:
        if (h <= w and h == se) or (w <= h and w == se):
            return h, w
        return (int(se * h / w), se) if w < h else (se, int(se * w / h))
    return int(_size_get(size, "height")), int(_size_get(size, "width"))


def _crop_offset(n: int, crop: int) -> int:
    """Where the image's first pixel lands inside a center crop of length `crop` (numpy center_crop,
    which zero-pads when the image is smaller than the crop)."""
    pad = math.ceil((max(crop, n) - n) / 2)
    return pad - max(0, (n - crop) // 2 + pad)


def clip_view(w: int, h: int, ip, pad_square: bool = False) -> tuple[Affine, int, int]:
    """Affine from the processed square (crop) back to the original for CLIP-style processing:
    [pad to square] -> resize -> center crop. Returns (affine, crop_h, crop_w)."""
    px = py = 0
    cw, ch = w, h
    if pad_square and w != h:
        m = max(w, h)
        if w > h:
            py = (m - h) // 2
        else:
            px = (m - w) // 2
        cw = ch = m
    rh, rw = _resized_hw(ch, cw, ip.size) if ip.do_resize else (ch, cw)
    crop_h, crop_w = (int(ip.crop_size["height"]), int(ip.crop_size["width"])) if ip.do_center_crop else (rh, rw)
    oy, ox = _crop_offset(rh, crop_h), _crop_offset(rw, crop_w)
    sx, sy = cw / rw, ch / rh
    return Affine(sx, sy, -ox * sx - px, -oy * sy - py, w, h), crop_h, crop_w


class LlavaAdapter(Adapter):
    """LLaVA-1.5: one square view, (crop/patch)^2 tokens; with strategy 'full' the CLS comes first."""

    family = "llava"
    model_types = ("llava",)

    @property
    def patch_size(self) -> int:
        return int(self.model.config.vision_config.patch_size)

    @property
    def strategy(self) -> str:
        return self.model.config.vision_feature_select_strategy

    def image_tokens(self, image: Image.Image, index: int, inputs: dict) -> ImageTokens:
        ip = self.processor.image_processor
        # LlavaImageProcessor's do_pad pads to a square with the mean colour before resizing;
        # other processors use do_pad for batch padding, which adds nothing here.
        pad_square = "Llava" in type(ip).__name__ and bool(getattr(ip, "do_pad", False))
        affine, ch, cw = clip_view(image.width, image.height, ip, pad_square)
        p = self.patch_size
        toks = ImageTokens.grid(affine, ch // p, cw // p, p, p)
        if self.strategy == "full":
            toks = ImageTokens.cat([ImageTokens.special(1), toks])  # CLS: global, no patch
        return toks


def best_resolution(h: int, w: int, pinpoints: list) -> tuple[int, int]:
    from transformers.image_processing_utils import select_best_resolution

    return tuple(int(v) for v in select_best_resolution((h, w), pinpoints))


def anyres_canvas(h: int, w: int, best: tuple[int, int]) -> tuple[Affine, int, int]:
    """Resize keeping aspect into `best` (ceil, as get_patch_output_size) and paste centered."""
    bh, bw = best
    sw, sh = bw / w, bh / h
    if sw < sh:
        nw, nh = bw, min(math.ceil(h * sw), bh)
    else:
        nh, nw = bh, min(math.ceil(w * sh), bw)
    return Affine.resize(w, h, nw, nh, (bw - nw) // 2, (bh - nh) // 2), bh, bw


def unpad_slice(orig_h: int, orig_w: int, cur_h: int, cur_w: int) -> tuple[slice, slice]:
    """The rows/columns of the feature grid the model keeps (transformers' `unpad_image`)."""
    if orig_w / orig_h > cur_w / cur_h:
        new_h = int(round(orig_h * (cur_w / orig_w), 7))
        pad = (cur_h - new_h) // 2
        return slice(pad, cur_h - pad), slice(0, cur_w)
    new_w = int(round(orig_w * (cur_h / orig_h), 7))
    pad = (cur_w - new_w) // 2
    return slice(0, cur_h), slice(pad, cur_w - pad)


class LlavaNextAdapter(LlavaAdapter):
    """LLaVA-NeXT: base view (whole image squashed to a square) then the AnyRes tiles laid out as
    one grid, padding rows/columns removed, an `image_newline` token ending every grid row."""

    family = "llava_next"
    model_types = ("llava_next",)

    def _check_processor(self, ip) -> int:
        crop = int(ip.crop_size["height"]) if ip.do_center_crop else int(_size_get(ip.size, "shortest_edge"))
        side = _size_get(ip.size, "shortest_edge") or _size_get(ip.size, "height")
        if int(side) != crop:
            raise AdapterError(f"{self.family}: size {ip.size} != crop {crop}; tiles would be re-cropped")
        if self.strategy != "default":
            raise AdapterError(f"{self.family}: only vision_feature_select_strategy='default' is supported")
        return crop

    def base_tokens(self, w: int, h: int, crop: int, grid: int) -> ImageTokens:
        p = crop / grid
        return ImageTokens.grid(Affine.resize(w, h, crop, crop), grid, grid, p, p, tile=0)

    def image_tokens(self, image: Image.Image, index: int, inputs: dict) -> ImageTokens:
        ip = self.processor.image_processor
        crop = self._check_processor(ip)
        cfg = self.model.config
        grid = int(cfg.vision_config.image_size) // int(cfg.vision_config.patch_size)
        h, w = (int(v) for v in inputs["image_sizes"][index])
        base = self.base_tokens(w, h, crop, grid)
        best = best_resolution(h, w, cfg.image_grid_pinpoints)
        canvas, bh, bw = anyres_canvas(h, w, best)
        nph, npw = bh // crop, bw // crop
        rows, cols = unpad_slice(h, w, nph * grid, npw * grid)
        return ImageTokens.cat([base, self.tiles_tokens(canvas, crop, grid, npw, rows, cols)])

    def tiles_tokens(self, canvas: Affine, crop: int, grid: int, npw: int, rows: slice, cols: slice,
                     newline: bool = True) -> ImageTokens:
        """The unpadded tile grid in row-major order, each row followed by its newline token."""
        p = crop / grid
        R_N, C_N = np.arange(rows.start, rows.stop), np.arange(cols.start, cols.stop)
        RR, CC = np.meshgrid(R_N, C_N, indexing="ij")
        RR, CC = RR.ravel(), CC.ravel()
        box = canvas.boxes(CC * p, RR * p, (CC + 1) * p, (RR + 1) * p)
        n = len(RR)
        feats = ImageTokens(np.full(n, 1, np.int8), (1 + (RR // grid) * npw + CC // grid).astype(np.int32),
                            (RR % grid).astype(np.int32), (CC % grid).astype(np.int32), box)
        if not newline:
            return feats
        return with_row_ends(feats, len(C_N), R_N)


def with_row_ends(feats: ImageTokens, width: int, rows_R: np.ndarray) -> ImageTokens:
    """`feats` (row-major, `width` per row) with one special token (`image_newline`, tile -1,
    patch_row = that row's number) after each row, placed by index arithmetic, not a loop over rows."""
    n_rows = len(rows_R)
    ends = ImageTokens.special(n_rows, tile=-1)
    ends.patch_row[:] = rows_R
    out = ImageTokens.cat([feats, ends])
    # row i's tokens go to i*(width+1) .. i*(width+1)+width-1, its end token right after
    where_N = np.concatenate([(np.arange(n_rows * width) // width) * (width + 1) + np.arange(n_rows * width) % width,
                              np.arange(n_rows) * (width + 1) + width])
    order = np.empty_like(where_N)
    order[where_N] = np.arange(len(where_N))
    return out.take(order)
