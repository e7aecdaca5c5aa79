"""Loading untrusted images: everything becomes 8-bit RGB or a Reject with a reason."""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile

DEFAULT_MAX_PIXELS = 64_000_000  # ~8000x8000; beyond that decoding alone can take GBs of RAM
MIN_SIDE = 2


@dataclass
class Reject(Exception):
    """A sample that cannot be used, and why (written to rejects.jsonl)."""

    id: str
    reason: str

    def __str__(self) -> str:
        return f"{self.id}: {self.reason}"


def _to_rgb(im: Image.Image, sample_id: str) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        # Composite on white: dropping alpha would expose whatever colour the transparent pixels
        # happen to store (often black), which the model would then see.
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # PIL's own convert clips 16/32-bit values at 255 (a white image); rescale the range.
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if mode.startswith("I;16"):
            lo, hi = 0.0, 65535.0
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        return Image.fromarray(scaled.round().clip(0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in ("L", "P", "1", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"):
        return im.convert("RGB")
    raise Reject(sample_id, f"unsupported image mode {mode}")


def load_image(src: str | os.PathLike | bytes | Image.Image, sample_id: str,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open, size-check, fully decode and convert to RGB; raise Reject on any problem."""
    if isinstance(src, Image.Image):
        im = src
    else:
        if isinstance(src, (bytes, bytearray)):
            if not src:
                raise Reject(sample_id, "empty image bytes")
            fh = io.BytesIO(src)
        else:
            path = os.fspath(src)
            if not os.path.exists(path):
                raise Reject(sample_id, f"missing file {path}")
            if os.path.getsize(path) == 0:
                raise Reject(sample_id, f"zero-byte file {path}")
            fh = path  # PIL opens and, once decoded, closes the file itself
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                im = Image.open(fh)
        except Exception as e:  # PIL raises many types for garbage input
            raise Reject(sample_id, f"not a readable image: {type(e).__name__}: {e}") from None
    w, h = im.size
    if w * h > max_pixels:
        raise Reject(sample_id, f"huge image {w}x{h} ({w * h} pixels > max_pixels {max_pixels})")
    if min(w, h) < MIN_SIDE:
        raise Reject(sample_id, f"image too small: {w}x{h}")
    try:
        # Truncated files must fail here, not silently decode with grey bottom rows.
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        im.load()
    except Exception as e:
        raise Reject(sample_id, f"corrupt or truncated image: {type(e).__name__}: {e}") from None
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)  # animated GIF/TIFF: the first frame
    return _to_rgb(im, sample_id)
