"""The loaded scorers of a score run (segmenter, CLIP, detection judge and its non-activating images) and
how they are built from a ScoreConfig and the index's meta."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..index.read import example_image, index_source
from .detection import DetectionJudge, detection_score
from .iou import random_image_iou, region_mask
from .pool import ImagePool
from .segment import GroundedSAMSegmenter, WorldSegmenter, llm_phrases, rule_phrase

SEGMENTERS = ("world", "grounded-sam")


def load_images(source, examples: list) -> list[Image.Image]:
    """The original images of a feature's top images (mmsae.index Examples), checked against the index."""
    return [example_image(source, e) for e in examples]


@dataclass
class Scorers:
    """What scores the metrics: a metric is scored when its scorer is set."""

    source: object  # the indexed data source (mmsae.data), for the images
    segmenter: object | None = None  # iou and its random baselines
    clip: object | None = None  # clip, clip_random (a ClipScorer)
    judge: DetectionJudge | None = None  # detection_bacc
    pool: ImagePool | None = None  # random images (detection negatives, iou_random_images); built by run_score
    phrase_backend: object | None = None  # an LLM (complete_many) for explanation -> entity phrase
    n_negatives: int | None = None  # default: as many as the feature's top images
    negative_tolerance: float = 0.01
    _images: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _phrases: dict = field(default_factory=dict, repr=False)  # the random-explanation baseline reuses them
    _pool_segs: OrderedDict = field(default_factory=OrderedDict, repr=False)  # (phrase, pool row) -> mask

    def models(self) -> dict[str, str]:
        """metric -> the name stored in the scores table's model column."""
        out = {}
        if self.segmenter is not None:
            seg = self.segmenter.name + (f"+phrase:{self.phrase_backend.name}" if self.phrase_backend else "")
            out.update(iou=seg, iou_random=seg, iou_random_expl=seg, iou_random_images=seg)
        if self.clip is not None:
            out.update(clip=self.clip.name, clip_random=self.clip.name)
        if self.judge is not None:
            out["detection_bacc"] = self.judge.name
        return out

    def phrase(self, explanation: str) -> str:
        """The entity phrase to ground: the world segmenter reads the world's concept names from the
        explanation itself; an open-vocabulary grounder gets the LLM's phrase, or the rule's."""
        if isinstance(self.segmenter, WorldSegmenter):
            return explanation
        if explanation not in self._phrases:
            self._phrases[explanation] = (llm_phrases([explanation], self.phrase_backend)[0][0] if self.phrase_backend
                                          is not None else rule_phrase(explanation))
        return self._phrases[explanation]

    def image(self, key: tuple[int, int]) -> Image.Image:
        """A pool image by (sample, image_index), kept in a small cache: negatives recur across features."""
        if key not in self._images:
            sample, image_index = key
            self._images[key] = self.source.record(sample).images[image_index]
            if len(self._images) > 256:
                self._images.popitem(last=False)
        return self._images[key]

    def pool_segment(self, row: int, phrase: str) -> np.ndarray:
        """The phrase's segmentation of pool image `row`, kept in a small cache: features that share an
        explanation ground it on the same random images."""
        key = (phrase, row)
        if key not in self._pool_segs:
            im = self.pool.images[row]
            mask = self.segmenter.segment(self.image(self.pool.keys[row]), phrase, im.sample_id)
            if mask.shape != (im.size[1], im.size[0]):
                raise ValueError(f"the segmenter returned a {mask.shape[1]}x{mask.shape[0]} mask for sample "
                                 f"{im.sample_id}, whose image is {im.size[0]}x{im.size[1]}")
            self._pool_segs[key] = mask
            if len(self._pool_segs) > 512:
                self._pool_segs.popitem(last=False)
        return self._pool_segs[key]

    def random_images_iou(self, feature: int, phrase: str, n_images: int, threshold: float,
                          rng: np.random.Generator, trials: int):
        """The paper's code's baseline: the explanation against the feature's activation region on random
        images of the pool (a Baseline)."""
        if self.pool is None or not self.pool.images:
            raise ValueError("no pool of random images with activation maps")
        pool = self.pool

        def region(i: int) -> np.ndarray:
            im = pool.images[i]
            return region_mask(im.box_P4, pool.activation_map(i, feature), im.size, threshold)

        return random_image_iou(lambda i: self.pool_segment(i, phrase), region, len(pool.keys), n_images, rng, trials)

    def detect(self, feature: int, text: str, tops: list, images: list[Image.Image], max_act: float,
               rng: np.random.Generator) -> tuple[float, dict]:
        if self.pool is None:
            raise ValueError("no pool of random images to find non-activating ones in")
        n = self.n_negatives or len(tops)
        top_keys = [(t.sample, t.image_index) for t in tops]
        neg = self.pool.negatives(feature, max_act, n, rng, self.negative_tolerance, exclude=set(top_keys))
        if not neg:
            raise ValueError(f"none of the {len(self.pool.keys)} pool images has feature {feature} at ~0 "
                             f"(<= {self.negative_tolerance} x its max activation); enlarge the negative pool")
        res = detection_score(text, images, [self.image(k) for k in neg], self.judge, top_keys, neg)
        if res.bacc is None:
            raise ValueError(f"the judge answered none of the {len(images) + len(neg)} images: {res.errors[:3]}")
        details = res.to_dict()
        details.update(errors=res.errors[:5], n_pos=len(images), n_neg=len(neg), negatives=[list(k) for k in neg],
                       template=self.judge.version)
        return res.bacc, details


def _is_zoo(path: Path | str | None) -> bool:
    from ..defaults import ZOO_WEIGHTS as WEIGHTS

    return path is not None and Path(WEIGHTS).resolve() in Path(path).resolve().parents


def build_scorers(cfg, meta: dict) -> Scorers:
    """Load what cfg asks for; defaults on a world index are the world segmenter, the zoo CLIP and (for
    detection) the zoo subject as judge."""
    from ..defaults import zoo_model_dir as model_dir

    world = str(meta.get("data", "")).startswith("world:")
    scorers = Scorers(index_source(meta, cfg.source), n_negatives=cfg.n_negatives,
                      negative_tolerance=cfg.negative_tolerance)
    if cfg.iou:
        kind = cfg.segmenter or ("world" if world else "grounded-sam")
        if kind == "world":
            if not world:
                raise ValueError(f"the world segmenter needs an index of the embedded world; this one indexes "
                                 f"{meta.get('data')!r}: use --segmenter grounded-sam")
            scorers.segmenter = WorldSegmenter(meta.get("image_size"))
        elif kind == "grounded-sam":
            if cfg.grounding_model is None or cfg.sam_model is None:
                raise ValueError("the grounded-sam segmenter needs --grounding-model and --sam-model (local "
                                 "GroundingDINO and SAM checkpoints)")
            scorers.segmenter = GroundedSAMSegmenter(cfg.grounding_model, cfg.sam_model, cfg.box_threshold,
                                                     cfg.text_threshold, cfg.device)
        else:
            raise ValueError(f"unknown segmenter {kind!r}; choose one of {', '.join(SEGMENTERS)}")
        if cfg.phrase_url or cfg.phrase_model:
            if not (cfg.phrase_url and cfg.phrase_model):
                raise ValueError("an LLM phrase step needs both --phrase-url and --phrase-model")
            from ..llm import HTTPChat, HTTPChatConfig

            scorers.phrase_backend = HTTPChat(HTTPChatConfig(cfg.phrase_url, cfg.phrase_model, max_tokens=16))
    if cfg.clip:
        from .clip_score import ClipScorer

        scorers.clip = ClipScorer(cfg.clip_model or model_dir("clip"), cfg.device)
    if cfg.detection:
        scorers.judge = build_judge(cfg, world)
    return scorers


def build_judge(cfg, world: bool) -> DetectionJudge:
    from ..llm import HTTPChat, HTTPChatConfig
    from ..defaults import zoo_model_dir as model_dir
    from .local_judge import BatchedLocalJudge

    if cfg.judge_url:
        if not cfg.judge_name:
            raise ValueError("a judge server (--explainer-url) needs the model name it serves (--explainer-name)")
        backend = HTTPChat(HTTPChatConfig(cfg.judge_url, cfg.judge_name, max_tokens=8))
        path = None
    else:
        if cfg.judge_model is None and not world:
            raise ValueError("detection needs a judge: --explainer-model PATH (local HF LMM) or --explainer-url")
        path = cfg.judge_model or model_dir("subject")
        backend = BatchedLocalJudge(path, max_tokens=8, device=cfg.device)
    template = cfg.detection_template or ("detect-zoo-v1" if path is not None and _is_zoo(path) else "detect-yesno-v1")
    return DetectionJudge(backend, template)
