"""Scores of explanations: IoU of grounded segmentations with activation regions, CLIP score, detection
(balanced accuracy of a judge), each with its random baseline; `run_score` scores a whole index.

May import (the layers of pyproject.toml's importlinter contract): llm, index, train, evals, sae, store, models,
data, world, viz, io, util, defaults; not its sibling explain.
"""

from .clip_score import ClipScorer
from .detection import DetectionJudge, DetectionResult, detection_score
from .iou import (binarise, concept_groups, entity_concepts, explanation_class, iou, mean_iou, paint,
                  random_explanation_iou, random_image_iou, random_region_iou, region_mask)
from .pool import ImagePool, build_pool
from .run import ScoreConfig, run_score
from .scorers import Scorers
from .segment import GroundedSAMSegmenter, WorldSegmenter, llm_phrases, rule_phrase
from .stats import Baseline, balanced_accuracy

__all__ = ["ClipScorer", "DetectionJudge", "DetectionResult", "detection_score", "binarise", "concept_groups",
           "entity_concepts", "explanation_class", "iou", "mean_iou", "paint", "random_explanation_iou",
           "random_image_iou", "random_region_iou", "region_mask", "ImagePool", "build_pool", "ScoreConfig", "run_score",
           "Scorers", "GroundedSAMSegmenter", "WorldSegmenter", "llm_phrases", "rule_phrase", "Baseline",
           "balanced_accuracy"]
