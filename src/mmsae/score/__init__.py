"""Scores of explanations: IoU of grounded segmentations with activation regions, CLIP score, baselines."""

from .clip_score import ClipScorer
from .iou import WorldSegmenter, binarise, entity_concepts, iou, iou_score, random_region_iou, upsample

__all__ = ["ClipScorer", "WorldSegmenter", "binarise", "entity_concepts", "iou", "iou_score", "random_region_iou", "upsample"]
