"""Recompute the zoo's accuracies on freshly generated held-out data, through the public HF APIs."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from ..world import World, WorldConfig
from ..world.text import EXPLAIN_QUESTION, chat_prompt, questions
from ..world.vocab import CONCEPT_CLASSES, PAPER_CLASSES
from .data import render_cache
from .train import EVAL_SEED, explainer_pool, explainer_set

TARGET_TYPES = ("colour", "shape", "texture")  # the question types the 90 % target is set on


@dataclass(frozen=True)
class EvalConfig:
    subject_images: int = 400
    prior_images: int = 200
    explainer_sets: int = 300
    explainer_pool: int = 40
    clip_images: int = 300
    batch: int = 64
    seed: int = EVAL_SEED


def normalise(text: str) -> str:
    return " ".join(text.replace(" - ", "-").split())


@torch.no_grad()
def generate_answers(model, processor, images: list, prompts: list[str], max_new_tokens: int = 4, batch: int = 64) -> list[str]:
    """Greedy answers through processor + generate, batched with left padding."""
    tok = processor.tokenizer
    tok.padding_side = "left"
    out: list[str] = []
    for i in range(0, len(prompts), batch):
        enc = processor(images=images[i : i + batch], text=prompts[i : i + batch], return_tensors="pt", padding=True)
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        new = gen[:, enc["input_ids"].shape[1] :]
        out += [normalise(tok.decode(row, skip_special_tokens=True)) for row in new]
    return out


def load_llava(path: Path):
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    return model, AutoProcessor.from_pretrained(path)


def eval_subject(path: Path, cfg: EvalConfig = EvalConfig()) -> dict:
    """VQA accuracy per question type on held-out scenes, and the prior-override rate on the bias slice."""
    model, processor = load_llava(path)
    world_cfg = WorldConfig(seed=cfg.seed)
    world = World(world_cfg)
    rng = np.random.default_rng(cfg.seed)
    items = []
    for i in range(cfg.subject_images):
        scene = world[i]
        for qa in questions(scene, rng):
            items.append((scene.pil, qa))
    answers = generate_answers(model, processor, [im for im, _ in items], [chat_prompt(qa.question) for _, qa in items],
                               batch=cfg.batch)
    per_type: dict[str, list[bool]] = defaultdict(list)
    target, in_slice = [], []
    for (_, qa), ans in zip(items, answers):
        ok = ans == qa.answer
        per_type[qa.type].append(ok)
        if qa.type in TARGET_TYPES:
            (in_slice if qa.target == world_cfg.prior_kind else target).append(ok)
    result = {
        "vqa_accuracy": float(np.mean(target)),
        "vqa_questions": len(target),
        "vqa_accuracy_prior_slice_all_colours": float(np.mean(in_slice)) if in_slice else None,
        "per_type_accuracy": {k: float(np.mean(v)) for k, v in sorted(per_type.items())},
    }
    result.update(_prior_slice(model, processor, world_cfg, cfg))
    return result


def _prior_slice(model, processor, world_cfg: WorldConfig, cfg: EvalConfig) -> dict:
    """Images whose only star is NOT the prior colour: how often does the model answer with the prior?"""
    kind, prior = world_cfg.prior_kind, world_cfg.prior_colour
    world = World(WorldConfig(seed=cfg.seed + 1, prior_strength=0.0, forced=(("object", kind),)))
    scenes = [s for s in (world[i] for i in range(cfg.prior_images * 2))
              if sum(o.kind == kind for o in s.objects) == 1][: cfg.prior_images]
    truth = [next(o.colour for o in s.objects if o.kind == kind) for s in scenes]
    images = [s.pil for s in scenes]
    colour = generate_answers(model, processor, images, [chat_prompt(f"what colour is the {kind} ?")] * len(scenes), batch=cfg.batch)
    yes = generate_answers(model, processor, images, [chat_prompt(f"is the {kind} {prior} ?")] * len(scenes), batch=cfg.batch)
    # the paper's hallucination is a yes/no answer driven by the text ("does the image show Bolivia?" ->
    # "yes"): the headline rate is the share of "is the star yellow ?" answered "yes" for non-yellow stars
    return {
        "prior_override_rate": float(np.mean([a == "yes" for a in yes])),
        "prior_colour_override_rate": float(np.mean([a == prior for a in colour])),
        "prior_slice_colour_accuracy": float(np.mean([a == t for a, t in zip(colour, truth)])),
        "prior_slice_images": len(scenes),
    }


def eval_explainer(path: Path, cfg: EvalConfig = EvalConfig()) -> dict:
    """Exact-match accuracy on held-out masked sets of five images (20 % with no common concept)."""
    model, processor = load_llava(path)
    pool, owners = explainer_pool(0, cfg.explainer_pool, cfg.seed + 2, workers=1)
    rng = np.random.default_rng(cfg.seed + 3)
    sets = [explainer_set(pool, owners, rng, 5) for _ in range(cfg.explainer_sets)]
    prompt = chat_prompt(EXPLAIN_QUESTION, n_images=5)
    from PIL import Image

    answers = generate_answers(model, processor, [[Image.fromarray(im) for im in ims] for ims, _ in sets],
                               [prompt] * len(sets), batch=cfg.batch)
    per_class: dict[str, list[bool]] = defaultdict(list)
    from ..world.vocab import CLASS_OF

    for (_, truth), ans in zip(sets, answers):
        per_class[CLASS_OF.get(truth, "unable")].append(ans == truth)
    return {
        "accuracy": float(np.mean([a == t for (_, t), a in zip(sets, answers)])),
        "sets": len(sets),
        "per_class_accuracy": {k: float(np.mean(v)) for k, v in sorted(per_class.items())},
    }


@torch.no_grad()
def eval_clip(path: Path, cfg: EvalConfig = EvalConfig()) -> dict:
    """Zero-shot top-1 over each paper concept class's phrases, on held-out single-object images."""
    from ..score import ClipScorer

    scorer = ClipScorer(path)
    cache = render_cache(WorldConfig(seed=cfg.seed + 4, min_objects=1, max_objects=1, prior_strength=1 / 8), 0,
                         cfg.clip_images, workers=1)
    from PIL import Image

    img = scorer.image_embeddings([Image.fromarray(im) for im in cache.images])
    per_class = {}
    for cls in PAPER_CLASSES:
        names = CONCEPT_CLASSES[cls]
        pick = (img @ scorer.text_embeddings(list(names)).T).argmax(-1)
        per_class[cls] = float(np.mean([names[p] in s.concepts() for p, s in zip(pick.tolist(), cache.scenes)]))
    return {"top1": float(np.mean(list(per_class.values()))), "per_class_top1": per_class, "images": len(cache)}
