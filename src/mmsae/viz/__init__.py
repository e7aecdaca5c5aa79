"""Pictures of features: activation maps painted back onto the original pixels, heatmaps, the paper's
masked images and per-feature contact sheets (drawing is pure; `reader` loads what it needs from an index)."""

from __future__ import annotations

from .maps import activation_map, heatmap_overlay, masked_image, visible_mask
from .reader import feature_sheet_from_index, load_image, read_top_images
from .sheet import TopImage, feature_sheet, save_png, sheet_size

__all__ = ["TopImage", "activation_map", "feature_sheet", "feature_sheet_from_index", "heatmap_overlay",
           "load_image", "masked_image", "read_top_images", "save_png", "sheet_size", "visible_mask"]
