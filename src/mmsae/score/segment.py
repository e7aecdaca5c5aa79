"""Grounding + segmentation backends for the IoU score, and the explanation -> entity phrase step.

A segmenter has a `name` and `segment(image, phrase, sample_id) -> bool H x W` (the image's size); a
phrase it cannot ground gives an empty mask, which the paper counts as IoU 0.
- `WorldSegmenter`: the embedded world's exact concept masks, found by the sample id 'world-<seed>-<i>';
- `GroundedSAMSegmenter`: GroundingDINO boxes (box threshold 0.3, as the paper) then SAM masks inside
  them, through `transformers`, for any local checkpoints.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..world import World, WorldConfig
from .iou import concept_groups
from .templates import load_template

_WORLD_ID = re.compile(r"^world-(\d+)-(\d+)$")


class WorldSegmenter:
    """Exact masks on the embedded world. The phrase's concept groups are grounded as a detector reads
    them: concepts of one group describe one thing (masks intersect: 'red star' is the red star), groups
    add up ('star and grass'). A phrase naming no world concept segments nothing."""

    name = "world"

    def __init__(self, image_size: int | None = None):
        self.image_size = image_size
        self._worlds: dict[int, World] = {}

    def scene(self, sample_id: str):
        m = _WORLD_ID.match(sample_id or "")
        if not m:
            raise ValueError(f"sample id {sample_id!r} is not a world sample ('world-<seed>-<index>'): the world "
                             "segmenter only works on indexes of the embedded world")
        seed, index = int(m.group(1)), int(m.group(2))
        if seed not in self._worlds:
            kwargs = {} if self.image_size is None else {"image_size": self.image_size}
            self._worlds[seed] = World(WorldConfig(seed=seed, **kwargs))
        return self._worlds[seed][index]

    def segment(self, image: Image.Image | None, phrase: str, sample_id: str) -> np.ndarray:
        scene = self.scene(sample_id)
        h, w = scene.image.shape[:2]
        if image is not None and image.size != (w, h):
            raise ValueError(f"sample {sample_id}: the image is {image.size[0]}x{image.size[1]} but the world's "
                             f"scene is {w}x{h} (wrong image_size?)")
        mask = np.zeros((h, w), dtype=bool)
        for group in concept_groups(phrase):
            part = np.ones((h, w), dtype=bool)
            for name in group:
                part &= scene.concept_mask(name)
            mask |= part
        return mask


class GroundedSAMSegmenter:
    """GroundingDINO + SAM from local Hugging Face checkpoints (any sizes, tiny random ones included)."""

    def __init__(self, grounding_model: str | Path, sam_model: str | Path, box_threshold: float = 0.3,
                 text_threshold: float = 0.25, device: str | None = None):
        from transformers import AutoProcessor, GroundingDinoForObjectDetection, SamModel, SamProcessor

        for label, path in (("grounding", grounding_model), ("SAM", sam_model)):
            if not (Path(path) / "config.json").is_file():
                raise FileNotFoundError(f"no {label} model at {path} (config.json missing)")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.detector = GroundingDinoForObjectDetection.from_pretrained(grounding_model).to(self.device).eval()
        self.detector_processor = AutoProcessor.from_pretrained(grounding_model)
        self.sam = SamModel.from_pretrained(sam_model).to(self.device).eval()
        self.sam_processor = SamProcessor.from_pretrained(sam_model)
        self.box_threshold, self.text_threshold = box_threshold, text_threshold
        self.name = f"grounded-sam:{Path(grounding_model).name}+{Path(sam_model).name}"

    @staticmethod
    def prompt(phrase: str) -> str:
        """GroundingDINO's text format: lower case, one '.'-terminated entry per thing to find."""
        parts = [p.strip(" .").lower() for p in re.split(r"\s*(?:\.|,|;|\band\b)\s*", phrase) if p.strip(" .")]
        return " . ".join(parts) + " ." if parts else ""

    @torch.no_grad()
    def detect(self, image: Image.Image, phrase: str) -> np.ndarray:
        """Boxes [n, 4] (x0, y0, x1, y1 pixels) whose score passes the box threshold."""
        text = self.prompt(phrase)
        if not text:
            return np.zeros((0, 4))
        enc = self.detector_processor(images=image.convert("RGB"), text=text, return_tensors="pt").to(self.device)
        out = self.detector(**enc)
        res = self.detector_processor.post_process_grounded_object_detection(
            out, enc["input_ids"], threshold=self.box_threshold, text_threshold=self.text_threshold,
            target_sizes=[(image.height, image.width)])[0]
        return res["boxes"].float().cpu().numpy().reshape(-1, 4)

    @torch.no_grad()
    def segment(self, image: Image.Image, phrase: str, sample_id: str | None = None) -> np.ndarray:
        mask = np.zeros((image.height, image.width), dtype=bool)
        boxes = self.detect(image, phrase)
        if len(boxes) == 0:
            return mask  # nothing grounded: IoU 0, as the paper counts grounding failures
        enc = self.sam_processor(images=image.convert("RGB"), input_boxes=[boxes.tolist()], return_tensors="pt")
        out = self.sam(**{k: v.to(self.device) for k, v in enc.items() if k in ("pixel_values", "input_boxes")},
                       multimask_output=False)
        masks = self.sam_processor.post_process_masks(out.pred_masks.cpu(), enc["original_sizes"],
                                                      enc["reshaped_input_sizes"])[0]  # [boxes, 1, H, W]
        return mask | masks.bool().any(dim=(0, 1)).numpy()


# ---- explanation -> short entity phrase ----

_FRAMING = {"the", "a", "an", "some", "highlighted", "visible", "region", "regions", "area", "areas", "pattern",
            "patterns", "image", "images", "showing", "shows", "feature", "common", "mostly", "various"}
_LINKS = {"of", "with", "in", "on", "and", "or"}


def rule_phrase(explanation: str, max_words: int = 8) -> str:
    """The explanation stripped of framing words ('highlighted regions of the red star' -> 'red star')."""
    kept = [w for w in re.sub(r"[^\w\s,-]", " ", explanation.lower()).split() if w not in _FRAMING]
    while kept and kept[0] in _LINKS:  # 'regions of the sky' leaves 'of sky'
        kept.pop(0)
    while kept and kept[-1] in _LINKS:
        kept.pop()
    return " ".join(kept[:max_words]).strip(" ,")


def llm_phrases(explanations: list[str], backend, template: str = "phrase-v1") -> tuple[list[str], list[str | None]]:
    """Explanations rewritten as short entity phrases by a chat backend (`complete_many`), as the paper's
    small LLM does; an answer that fails falls back to the rule and the reason is returned beside it."""
    tpl = load_template(template, ("rewrite",))
    batch = [([{"role": "system", "content": tpl["system"]}] if tpl.get("system") else [])
             + [{"role": "user", "content": tpl["user"].format(explanation=e)}] for e in explanations]
    phrases, problems = [], []
    for e, c in zip(explanations, backend.complete_many(batch)):
        text = (c.text or "").strip().splitlines()[0].strip(" .\"'") if c.error is None and (c.text or "").strip() else ""
        if not text or len(text.split()) > 12:
            phrases.append(rule_phrase(e))
            problems.append(c.error or f"unusable phrase {c.text!r}; used the rule")
        else:
            phrases.append(text.lower())
            problems.append(None)
    return phrases, problems
