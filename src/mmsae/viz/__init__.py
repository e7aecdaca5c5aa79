"""Pictures of features: activation maps painted back onto the original pixels, heatmaps, the paper's
masked images and per-feature contact sheets (drawing is pure; the index is read through mmsae.index).

May import (the layers of pyproject.toml's importlinter contract): io, util, defaults; not its sibling world
(its feature sheet still reads the index: the one listed back-edge, to remove).
"""

from __future__ import annotations

from .maps import activation_map, heatmap_overlay, masked_image, visible_mask
from .sheet import feature_sheet, feature_sheet_from_index, save_png, sheet_size

__all__ = ["activation_map", "feature_sheet", "feature_sheet_from_index", "heatmap_overlay", "masked_image",
           "save_png", "sheet_size", "visible_mask"]
