"""The token table: one row per position of a sequence, with pixel geometry for image tokens."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

TEXT, IMAGE, SPECIAL = 0, 1, 2
MODALITIES = ("text", "image", "special")


@dataclass
class Affine:
    """Maps a processed (resized/padded/cropped) pixel coordinate u back to the original image:
    x = u * sx + tx, y = v * sy + ty; boxes are clipped to the original image."""

    sx: float
    sy: float
    tx: float
    ty: float
    width: int  # original image size, for clipping
    height: int

    @staticmethod
    def resize(orig_w: int, orig_h: int, new_w: int, new_h: int, pad_x: float = 0, pad_y: float = 0) -> Affine:
        """The image was resized to (new_w, new_h) then pasted at (pad_x, pad_y) on a canvas (or,
        with negative pads, cropped starting at (-pad_x, -pad_y))."""
        sx, sy = orig_w / new_w, orig_h / new_h
        return Affine(sx, sy, -pad_x * sx, -pad_y * sy, orig_w, orig_h)

    def boxes(self, u0_N: np.ndarray, v0_N: np.ndarray, u1_N: np.ndarray, v1_N: np.ndarray) -> np.ndarray:
        box_N4 = np.stack(
            [u0_N * self.sx + self.tx, v0_N * self.sy + self.ty, u1_N * self.sx + self.tx, v1_N * self.sy + self.ty],
            axis=1,
        ).astype(np.float64)
        box_N4[:, [0, 2]] = box_N4[:, [0, 2]].clip(0, self.width)
        box_N4[:, [1, 3]] = box_N4[:, [1, 3]].clip(0, self.height)
        empty_N = (box_N4[:, 2] <= box_N4[:, 0]) | (box_N4[:, 3] <= box_N4[:, 1])
        box_N4[empty_N] = np.nan  # the patch lies wholly on padding: it covers no original pixel
        return box_N4

    def grid(self, rows: int, cols: int, patch_h: float, patch_w: float, u_off: float = 0, v_off: float = 0):
        """Boxes of a rows x cols patch grid (row-major) whose top-left is at (u_off, v_off)."""
        r_N, c_N = np.divmod(np.arange(rows * cols), cols)
        u0, v0 = u_off + c_N * patch_w, v_off + r_N * patch_h
        return r_N, c_N, self.boxes(u0, v0, u0 + patch_w, v0 + patch_h)


@dataclass
class ImageTokens:
    """Per-placeholder geometry of one image, in sequence order."""

    modality: np.ndarray  # int8: IMAGE, or SPECIAL for structural tokens (newline, CLS)
    tile: np.ndarray  # int32; 0 is the first (often the global/base) view
    patch_row: np.ndarray  # int32, -1 where meaningless
    patch_col: np.ndarray
    box: np.ndarray  # float64 [N, 4] x0 y0 x1 y1 in original pixels, NaN when none

    @staticmethod
    def grid(affine: Affine, rows: int, cols: int, patch_h: float, patch_w: float, tile: int = 0,
             u_off: float = 0, v_off: float = 0) -> ImageTokens:
        r_N, c_N, box_N4 = affine.grid(rows, cols, patch_h, patch_w, u_off, v_off)
        n = rows * cols
        return ImageTokens(np.full(n, IMAGE, np.int8), np.full(n, tile, np.int32), r_N.astype(np.int32),
                           c_N.astype(np.int32), box_N4)

    @staticmethod
    def special(n: int, tile: int = 0, row: int = -1) -> ImageTokens:
        return ImageTokens(np.full(n, SPECIAL, np.int8), np.full(n, tile, np.int32), np.full(n, row, np.int32),
                           np.full(n, -1, np.int32), np.full((n, 4), np.nan))

    @staticmethod
    def cat(parts: list[ImageTokens]) -> ImageTokens:
        return ImageTokens(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(ImageTokens)))

    def take(self, idx_N: np.ndarray) -> ImageTokens:
        return ImageTokens(*(getattr(self, f.name)[idx_N] for f in fields(ImageTokens)))


@dataclass
class TokenTable:
    """One sequence. image_index is the image's index within the encoded batch (-1 for non-image
    tokens); callers that store it re-base it per sample."""

    position: np.ndarray  # int32
    token_id: np.ndarray  # int64
    modality: np.ndarray  # int8 codes into MODALITIES
    image_index: np.ndarray  # int32
    tile: np.ndarray
    patch_row: np.ndarray
    patch_col: np.ndarray
    box: np.ndarray  # float64 [S, 4]

    @staticmethod
    def empty(n: int) -> TokenTable:
        neg = lambda: np.full(n, -1, np.int32)
        return TokenTable(np.zeros(n, np.int32), np.zeros(n, np.int64), np.zeros(n, np.int8), neg(), neg(), neg(),
                          neg(), np.full((n, 4), np.nan))

    def __len__(self) -> int:
        return len(self.position)

    def take(self, idx_N: np.ndarray) -> TokenTable:
        return TokenTable(*(getattr(self, f.name)[idx_N] for f in fields(TokenTable)))

    def columns(self) -> dict[str, np.ndarray]:
        """Flat columns (box split into x0..y1) as stored in Parquet."""
        cols = {f.name: getattr(self, f.name) for f in fields(TokenTable) if f.name != "box"}
        for j, name in enumerate(("x0", "y0", "x1", "y1")):
            cols[name] = self.box[:, j]
        return cols

    def covering(self, x: float, y: float, image_index: int | None = None) -> np.ndarray:
        """Positions of image tokens whose box contains the pixel point (x, y)."""
        hit = (self.modality == IMAGE) & (self.box[:, 0] <= x) & (x < self.box[:, 2])
        hit &= (self.box[:, 1] <= y) & (y < self.box[:, 3])
        if image_index is not None:
            hit &= self.image_index == image_index
        return self.position[hit]
