"""Pictures of features: activation maps painted back onto the original pixels, heatmaps, the paper's
masked images and per-feature contact sheets. Drawing is pure: arrays, examples and images in, images out;
it reads no index (mmsae.index.feature_sheet_from_index reads one and draws its sheet with feature_sheet).

May import (the layers of pyproject.toml's importlinter contract): io, util, defaults; not its sibling world.
"""

from __future__ import annotations

from .maps import activation_map, heatmap_overlay, masked_image, visible_mask
from .sheet import SheetExample, feature_sheet, save_png, sheet_size

__all__ = ["SheetExample", "activation_map", "feature_sheet", "heatmap_overlay", "masked_image", "save_png",
           "sheet_size", "visible_mask"]
