"""`mmsae score` as a Python API: score the explanations of an index and store the scores in it.

Per explained feature: iou (grounded segmentation of the explanation vs the binarised activation region
of its top images) and three random baselines: iou_random_images (the paper's code: the explanation and the
feature's region on random images of the data), iou_random_expl (other features' explanations on the top
images) and iou_random (regions of the same size at random patches); clip / clip_random
(CLIP score of the explanation vs of random other features' explanations with the same images) and
detection_bacc (a judge tells activating from non-activating images given the explanation). Rows go to the
index's `scores` table one transaction per chunk of features; a rerun skips (feature, metric, model,
explanation set) already stored, so a killed run resumes losing at most one chunk.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..index import results
from ..index.read import (feature_examples_many, feature_ids, feature_max_acts, index_file, open_index, read_meta,
                          resolve_paths)
from ..index.write import ScoreRow, write_scores
from ..io import write_config, write_json
from .iou import (binarise, concept_groups, explanation_class, mean_iou, random_explanation_iou, random_region_iou,
                  region_mask)
from .pool import build_pool
from .scorers import Scorers, build_scorers, load_images
from .summary import METRICS, format_score, summarise  # noqa: F401 (format_score: `mmsae score`'s printout)

SUMMARY_FILE = "score-summary.json"
IOU_METRICS = ("iou", "iou_random", "iou_random_expl", "iou_random_images")
METRIC_SEED = {m: i for i, m in enumerate(METRICS)}


@dataclass
class ScoreConfig:
    """Score the explanations of an index (IoU, CLIP, detection, random baselines) into its `scores` table."""

    index: Path
    """index directory (holds index.duckdb with explanations)"""
    features: list[int] | None = None
    """feature ids, e.g. 1,2,7-9 (None: every explained feature of the explanation set)"""
    limit: int | None = None
    """score at most this many features"""
    explainer: str | None = None
    """explanation set: the explainer model (None: the set with most explanations)"""
    prompt_version: str | None = None
    """explanation set: the prompt version"""
    iou: bool = True
    """IoU score and its random baselines (random images, explanations, regions)"""
    clip: bool = True
    """CLIP score and its random-explanation baseline"""
    detection: bool = False
    """detection score (balanced accuracy of a judge)"""
    segmenter: str | None = None
    """world | grounded-sam (None: world on a world index, else grounded-sam)"""
    grounding_model: Path | None = None
    """GroundingDINO checkpoint directory (grounded-sam)"""
    sam_model: Path | None = None
    """SAM checkpoint directory (grounded-sam)"""
    box_threshold: float = 0.3
    """GroundingDINO's box threshold (the paper's 0.3)"""
    text_threshold: float = 0.25
    """GroundingDINO's text threshold"""
    phrase_url: str | None = None
    """an OpenAI-compatible LLM server turning explanations into entity phrases"""
    phrase_model: str | None = None
    """the model name that server serves (None: the rule in segment.rule_phrase)"""
    clip_model: Path | None = None
    """HF CLIP checkpoint (None: the zoo's CLIP)"""
    judge_model: Path | None = None
    """detection judge: a local HF LMM (None on a world index: the zoo subject)"""
    judge_url: str | None = None
    """detection judge: an OpenAI-compatible server instead"""
    judge_name: str | None = None
    """the model name that judge server serves"""
    detection_template: str | None = None
    """detection template: detect-zoo-v1, detect-yesno-v1 or a JSON file (None: detect-zoo-v1 for zoo judges,
    else detect-yesno-v1)"""
    n_images: int = 5
    """top images per feature (the paper's 5)"""
    threshold: float = 0.0
    """activation region: patches above this fraction of the image's peak"""
    trials: int = 100
    """random-baseline trials per feature"""
    n_negatives: int | None = None
    """non-activating images per feature (None: as many as top images)"""
    random_images: bool = True
    """the paper's code's IoU baseline: the explanation and the feature on random images of the data (streams
    pool_records through model + SAE)"""
    pool_records: int = 200
    """random records streamed through model + SAE: non-activating images for detection, random images for the
    iou_random_images baseline"""
    negative_tolerance: float = 0.01
    """a non-activating image activates at most this fraction of the feature's max activation"""
    seed: int = 0
    """seed of the random baselines and the random-image pool"""
    chunk_size: int = 16
    """features per transaction"""
    source: str | None = None
    """data source spec replacing the index's meta.data (e.g. the images moved)"""
    device: str | None = None
    """cpu | cuda (None: cuda when available)"""
    progress: bool = True
    """show progress bars"""

    def validate(self) -> None:
        self.index = Path(self.index)
        if not (self.iou or self.clip or self.detection):
            raise ValueError("nothing to score: enable at least one of iou, clip, detection")
        for name in ("n_images", "trials", "chunk_size", "pool_records"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold is a fraction of the peak in [0, 1), got {self.threshold}")


@dataclass
class Tally:
    """What happened to each requested feature; nothing requested goes unaccounted."""

    requested: int = 0
    scored: list[int] = field(default_factory=list)
    already_scored: list[int] = field(default_factory=list)
    out_of_range: list[int] = field(default_factory=list)
    no_explanation: list[int] = field(default_factory=list)
    uninterpretable: list[int] = field(default_factory=list)
    failed_explanation: list[int] = field(default_factory=list)
    no_images: list[int] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)  # {"feature", "metric", "reason"}: not stored, retried next run
    empty_segmentations: int = 0  # images where the segmenter found nothing (IoU 0, counted as the paper does)

    def error(self, feature: int | None, metric: str, reason: str) -> None:
        self.errors.append({"feature": feature, "metric": metric, "reason": reason})


class _Others(Sequence):
    """Every explanation of the set but one feature's own: the pool of random explanations."""

    def __init__(self, texts: list[str], skip: int):
        self.texts, self.skip = texts, skip

    def __len__(self) -> int:
        return len(self.texts) - 1

    def __getitem__(self, i: int) -> str:
        return self.texts[i + (i >= self.skip)]


def choose_set(con, explainer: str | None, prompt_version: str | None) -> results.ExplanationSet:
    sets = results.explanation_sets(con)
    if not sets:
        raise ValueError("the index has no explanations: run `mmsae explain` first")
    ok = [s for s in sets if explainer in (None, s.model) and prompt_version in (None, s.prompt_version)]
    if not ok:
        known = ", ".join(f"{s.model}/{s.prompt_version}" for s in sets)
        raise ValueError(f"no explanations by {explainer or '*'} with prompt {prompt_version or '*'}; the index has {known}")
    return ok[0]


def run_score(cfg: ScoreConfig, scorers: Scorers | None = None) -> dict:
    """Score an index's explanations; returns the summary (also written to <index>/score-summary.json).
    `scorers` replaces the segmenter / CLIP scorer / judge / random-image pool built from cfg (for tests and
    callers holding loaded models)."""
    cfg.validate()
    con = open_index(cfg.index, read_only=False)
    write_config(index_file(cfg.index).parent, cfg, "score-config.json")  # beside score-summary.json
    try:
        meta = resolve_paths(read_meta(con), cfg.index)
        exp_set = choose_set(con, cfg.explainer, cfg.prompt_version)
        explanations = results.read_explanations(con, exp_set.model, exp_set.prompt_version)
        tally = Tally()
        todo = _select(con, cfg, explanations, tally)
        scorers = scorers or build_scorers(cfg, meta)
        models = {m: name for m, name in scorers.models().items() if cfg.random_images or m != "iou_random_images"}
        done = results.scored_keys(con)
        plan = {f: [m for m in models if (f, m, models[m], exp_set.model, exp_set.prompt_version) not in done] for f in todo}
        tally.already_scored = [f for f in todo if not plan[f]]
        plan = {f: ms for f, ms in plan.items() if ms}
        problems: dict[int, str] = {}
        tops = feature_examples_many(con, list(plan), cfg.n_images, problems=problems)
        for f, why in problems.items():
            tally.error(f, "*", why)
        tally.no_images = [f for f in plan if f not in problems and not tops.get(f)]  # e.g. text-only features
        plan = {f: ms for f, ms in plan.items() if tops.get(f)}
        _prepare_pool(cfg, meta, plan, scorers, tally)
        _score_features(con, cfg, meta, exp_set, explanations, plan, tops, scorers, tally)
        summary = summarise(results.read_scores(con, exp_set.model, exp_set.prompt_version), models)
    finally:
        con.close()
    counts = {k: v for k, v in asdict(tally).items() if k != "errors"}
    summary.update(index=str(cfg.index), explainer=exp_set.model, prompt_version=exp_set.prompt_version,
                   run={k: len(v) if isinstance(v, list) else v for k, v in counts.items()},
                   features={k: v for k, v in counts.items() if isinstance(v, list)}, run_errors=tally.errors,
                   config={k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()})
    write_json(cfg.index / SUMMARY_FILE, summary)
    return summary


def _select(con, cfg: ScoreConfig, explanations: dict, tally: Tally) -> list[int]:
    """The explained features to score; the rest are sorted into the tally with their reason."""
    known = set(feature_ids(con))
    wanted = sorted(explanations) if cfg.features is None else list(dict.fromkeys(int(f) for f in cfg.features))
    tally.requested = len(wanted)
    todo = []
    for f in wanted:
        if f not in known:
            tally.out_of_range.append(f)
            tally.error(f, "*", f"feature {f} is out of range: the index has features {min(known, default=0)}.."
                                f"{max(known, default=-1)}")
        elif f not in explanations:
            tally.no_explanation.append(f)
        elif explanations[f][0] == "uninterpretable":
            tally.uninterpretable.append(f)
        elif explanations[f][0] != "explained" or not explanations[f][1]:
            tally.failed_explanation.append(f)
        else:
            todo.append(f)
    return todo[: cfg.limit] if cfg.limit is not None else todo


def _score_features(con, cfg, meta, exp_set, explanations, plan, tops, scorers: Scorers, tally: Tally) -> None:
    if not plan:
        return
    world = str(meta.get("data", "")).startswith("world:")
    texts = [explanations[f][1] for f in sorted(explanations) if explanations[f][0] == "explained" and explanations[f][1]]
    order = {f: i for i, f in enumerate(f for f in sorted(explanations)
                                        if explanations[f][0] == "explained" and explanations[f][1])}
    max_acts = feature_max_acts(con)
    base = {"explainer": exp_set.model, "prompt_version": exp_set.prompt_version}
    features = list(plan)
    models = scorers.models()
    with _progress(cfg.progress, len(features), "scoring") as advance:
        for start in range(0, len(features), cfg.chunk_size):
            rows = []
            for f in features[start : start + cfg.chunk_size]:
                text = explanations[f][1]
                cls = explanation_class(text) if world else None
                common = {**base, "explanation": text, "samples": [t.sample_id for t in tops[f]]}
                new = _score_one(cfg, f, text, tops[f], plan[f], scorers, _Others(texts, order[f]),
                                 max_acts.get(f, 0.0), tally)
                rows += [ScoreRow(f, m, v, cls, {**common, **d}, models[m], time.time())
                         for m, (v, d) in new.items()]
                if new:
                    tally.scored.append(f)
                advance()
            write_scores(con, rows)


def _rng(cfg: ScoreConfig, feature: int, metric: str) -> np.random.Generator:
    # one stream per (seed, feature, metric): results do not depend on chunking, order or resumption
    return np.random.default_rng([cfg.seed, feature, METRIC_SEED[metric]])


def _score_one(cfg, f: int, text: str, tops: list, metrics: list[str], scorers: Scorers, pool: Sequence[str],
               max_act: float, tally: Tally) -> dict[str, tuple[float, dict]]:
    """{metric: (value, details)} for one feature; a failing metric is recorded and left out."""
    out: dict[str, tuple[float, dict]] = {}
    try:
        images = load_images(scorers.source, tops)
    except Exception as err:  # a missing or changed image: this feature waits for the next run
        tally.error(f, "*", f"{type(err).__name__}: {err}")
        return out
    if set(IOU_METRICS) & set(metrics):
        try:
            out.update(_iou_metrics(cfg, f, text, tops, images, metrics, scorers, tally, pool))
        except Exception as err:
            tally.error(f, "iou", f"{type(err).__name__}: {err}")
    if {"clip", "clip_random"} & set(metrics):
        try:
            img_ND = scorers.clip.image_embeddings(images)
            if "clip" in metrics:
                out["clip"] = (scorers.clip.score(text, images, img_ND), {"n_images": len(images)})
            if "clip_random" in metrics:
                if len(pool) == 0:
                    tally.error(f, "clip_random", "no other explanation to draw random explanations from")
                else:
                    b = scorers.clip.random_score(images, pool, _rng(cfg, f, "clip_random"), cfg.trials, img_ND)
                    out["clip_random"] = (b.mean, {"trials": b.trials, "se": b.se, "pool": len(pool)})
        except Exception as err:
            tally.error(f, "clip", f"{type(err).__name__}: {err}")
    if "detection_bacc" in metrics:
        try:
            res = scorers.detect(f, text, tops, images, max_act, _rng(cfg, f, "detection_bacc"))
            if res is not None:
                out["detection_bacc"] = res
        except Exception as err:
            tally.error(f, "detection_bacc", f"{type(err).__name__}: {err}")
    return out


def _iou_metrics(cfg, f, text, tops, images, metrics, scorers: Scorers, tally: Tally, pool: Sequence[str] = ()) -> dict:
    phrase = scorers.phrase(text)
    segs = [scorers.segmenter.segment(im, phrase, t.sample_id) for im, t in zip(images, tops)]
    for s, t in zip(segs, tops):
        if s.shape != (t.height, t.width):
            raise ValueError(f"the segmenter returned a {s.shape[1]}x{s.shape[0]} mask for sample {t.sample_id}, "
                             f"whose image is {t.width}x{t.height}")
    regions = [region_mask(t.box, t.acts, (t.width, t.height), cfg.threshold) for t in tops]
    empty = sum(not s.any() for s in segs)
    tally.empty_segmentations += empty
    groups = concept_groups(phrase)
    out = {}
    if "iou" in metrics:
        out["iou"] = (mean_iou(segs, regions), {"phrase": phrase, "concepts": groups, "n_images": len(tops),
                                                "empty_segmentations": empty, "threshold": cfg.threshold})
    if "iou_random" in metrics:
        sizes = [int(binarise(t.acts, cfg.threshold).sum()) for t in tops]
        b = random_region_iou(segs, [t.box for t in tops], sizes, _rng(cfg, f, "iou_random"), cfg.trials)
        out["iou_random"] = (b.mean, {"trials": b.trials, "se": b.se, "region_patches": sizes, "phrase": phrase})
    if "iou_random_expl" in metrics:
        if len(pool) == 0:
            tally.error(f, "iou_random_expl", "no other explanation to draw random explanations from")
        else:
            b = random_explanation_iou(scorers.segmenter.segment, images, [t.sample_id for t in tops], regions, pool,
                                       scorers.phrase, _rng(cfg, f, "iou_random_expl"), cfg.trials)
            out["iou_random_expl"] = (b.mean, {"trials": b.trials, "se": b.se, "pool": len(pool)})
    if "iou_random_images" in metrics:
        try:
            b = scorers.random_images_iou(f, phrase, len(tops), cfg.threshold, _rng(cfg, f, "iou_random_images"),
                                          cfg.trials)
            out["iou_random_images"] = (b.mean, {"trials": b.trials, "se": b.se, "n_images": len(tops),
                                                 "pool": len(scorers.pool.keys), "phrase": phrase})
        except Exception as err:
            tally.error(f, "iou_random_images", f"{type(err).__name__}: {err}")
    return out


def _prepare_pool(cfg: ScoreConfig, meta: dict, plan: dict[int, list[str]], scorers: Scorers, tally: Tally) -> None:
    """Stream the pool of random images once for every feature that needs it (detection negatives, the
    random-images IoU baseline); when it cannot be built those metrics are recorded as failed for those
    features and the other metrics go on."""
    needs = ("detection_bacc", "iou_random_images")
    wanted = sorted(f for f, ms in plan.items() if set(needs) & set(ms))
    if not wanted or scorers.pool is not None:
        return
    try:
        with _progress(cfg.progress, cfg.pool_records, "random images") as advance:
            scorers.pool = build_pool(meta, wanted, cfg.pool_records, cfg.seed, device=cfg.device,
                                      source=scorers.source, on_batch=lambda n: advance(n))
    except Exception as err:
        for f in wanted:
            for m in needs:
                if m in plan[f]:
                    plan[f].remove(m)
                    tally.error(f, m, f"no random images: {type(err).__name__}: {err}")
        return
    for i, rid, why in scorers.pool.rejects:
        tally.error(None, "pool", f"random-image pool: record {i} ({rid}) rejected: {why}")


@contextmanager
def _progress(enabled: bool, total: int, label: str):
    """A rich progress bar; yields advance(n=1)."""
    if not enabled:
        yield lambda n=1: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=False) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n=1: bar.advance(task, n)
