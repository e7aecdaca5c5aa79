"""Train the zoo from scratch: vision towers (dense concept supervision), subject, explainer, CLIP.

Each stage writes its result atomically and is skipped on a rerun, so `mmsae zoo train` survives kill -9
at stage granularity and a rerun with the same seed reproduces the same weights.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPVisionModel

from ..finetune.loop import train_loop

from ..world import WorldConfig
from ..world.text import EXPLAIN_QUESTION, UNABLE, chat_turns, partial_caption, questions
from . import build
from .data import (
    EXPLAINABLE,
    PATCH_CONCEPTS,
    ImageCache,
    apply_patch_mask,
    concept_visibility,
    pooled_targets,
    random_visibility,
    render_cache,
    shared_concepts,
    to_pixels,
)
from .lm import build_sequence, cosine_lr, lm_loss


@dataclass(frozen=True)
class ZooTrainConfig:
    seed: int = 0
    """seed of every stage's initialisation and batches"""
    tower_images: int = 40_000
    """world images the two CLIP towers are pretrained on"""
    tower_steps: int = 1_700
    """pretraining steps of each tower"""
    subject_images: int = 30_000
    """world images the subject is trained on"""
    subject_steps: int = 2_000
    """training steps of the subject"""
    subject_turns: int = 6
    """question/answer turns per training conversation of the subject"""
    explainer_pool: int = 300
    """forced images per explainable concept in the explainer's training pool"""
    explainer_steps: int = 1_200
    """training steps of the explainer"""
    clip_steps: int = 500
    """training steps of the CLIP dual encoder"""
    batch: int = 64
    """batch size (the towers use twice this)"""
    threads: int = 2
    """torch CPU threads (and image-rendering workers)"""


# world seeds: training data and the held-out evaluation never share a seed
TRAIN_SEED, EVAL_SEED = 1, 1_000_003


def _save_atomic(save, final: Path) -> None:
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save(tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def _autocast():
    # bf16 autocast halves the step on CPUs with AMX and is the norm on GPUs
    return torch.autocast("cuda" if torch.cuda.is_available() else "cpu", dtype=torch.bfloat16)


def pretrain_tower(spec: build.TowerSpec, cache: ImageCache, steps: int, batch: int, seed: int, label: str,
                   log: list, p_masked: float) -> CLIPVisionModel:
    """Dense multi-label supervision of every patch with the concepts it shows (a pretrained encoder)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tower = CLIPVisionModel(build.vision_config(spec))
    head = torch.nn.Linear(spec.hidden, len(PATCH_CONCEPTS))
    params = list(tower.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1.5e-3, weight_decay=0.01)
    factor = spec.patch_size // cache.scenes[0].config.patch_size
    threshold = 0.2 if factor == 1 else 0.08

    def micro(step: int, _m: int):
        idx = rng.integers(len(cache), size=batch)
        vis = random_visibility(rng, batch, cache.coverage.shape[1], p_masked)
        px = to_pixels(apply_patch_mask(cache.images[idx], vis))
        target = torch.from_numpy(pooled_targets(cache.coverage[idx], vis, factor, threshold))
        with _autocast():
            hid = tower(pixel_values=px).last_hidden_state[:, 1:]
            logits = head(hid).reshape(target.shape)
        loss = F.binary_cross_entropy_with_logits(logits.float(), target)
        return loss, lambda: {"loss": loss.item(), "f1": _f1(logits.detach() > 0, target > 0.5)}

    train_loop(params, opt, steps, micro, lr_at=lambda step: cosine_lr(step, steps, 100, 1.5e-3),
               label=f"tower ({label})", log=log)
    return tower


def _f1(pred: torch.Tensor, true: torch.Tensor) -> float:
    tp = (pred & true).sum().item()
    return 2 * tp / max(1, pred.sum().item() + true.sum().item())


@torch.no_grad()
def tower_features(tower: CLIPVisionModel, images_NHWC: np.ndarray, batch: int = 256) -> torch.Tensor:
    """Patch features (CLS dropped, as LLaVA's 'default' strategy) for a stack of images."""
    out = [tower(pixel_values=to_pixels(images_NHWC[i : i + batch])).last_hidden_state[:, 1:]
           for i in range(0, len(images_NHWC), batch)]
    return torch.cat(out)


def train_subject(model, processor, feats_NTV: torch.Tensor, cache: ImageCache, cfg: ZooTrainConfig, log: list) -> None:
    tok = processor.tokenizer
    rng = np.random.default_rng(cfg.seed + 11)
    torch.manual_seed(cfg.seed + 11)
    model.model.vision_tower.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    image_id, n_tok = tok.convert_tokens_to_ids("<image>"), feats_NTV.shape[1]

    def micro(step: int, _m: int):
        idx = rng.integers(len(cache), size=cfg.batch)
        seqs = [build_sequence(tok, chat_turns(questions(cache.scenes[i], rng)[: cfg.subject_turns]), n_tok)
                for i in idx]
        with _autocast():
            loss, acc = lm_loss(model, feats_NTV[idx].reshape(-1, feats_NTV.shape[-1]), seqs, image_id, tok.pad_token_id)
        return loss, lambda: {"loss": loss.item(), "answer_token_accuracy": acc}

    train_loop(params, opt, cfg.subject_steps, micro, label="subject", log=log,
               lr_at=lambda step: cosine_lr(step, cfg.subject_steps, 150, 1e-3))


def explainer_set(pool: ImageCache, owners: dict[str, np.ndarray], rng: np.random.Generator, n_images: int,
                  p_unable: float = 0.2) -> tuple[np.ndarray, str]:
    """Masked images sharing one concept (answer: its name) or sharing none (answer: unable)."""
    if rng.random() < p_unable:
        for _ in range(50):
            idx = rng.integers(len(pool), size=n_images)
            g = pool.coverage.shape[1]
            vis = np.zeros((n_images, g, g), dtype=bool)
            for k in range(n_images):  # a random blob: a rectangle of patches
                h, w = rng.integers(1, 4, size=2)
                r, c = rng.integers(0, g - h + 1), rng.integers(0, g - w + 1)
                vis[k, r : r + h, c : c + w] = True
            if not shared_concepts(pool.coverage[idx], vis):
                return apply_patch_mask(pool.images[idx], vis), UNABLE
    concept = EXPLAINABLE[rng.integers(len(EXPLAINABLE))]
    idx = rng.choice(owners[concept], size=n_images, replace=False)
    vis = np.stack([concept_visibility(pool.coverage[i], concept, rng) for i in idx])
    return apply_patch_mask(pool.images[idx], vis), concept


def explainer_pool(start: int, per_concept: int, seed: int, workers: int) -> tuple[ImageCache, dict[str, np.ndarray]]:
    """Images forced to contain each explainable concept, so every concept has many examples."""
    from .data import CLASS_OF

    caches, owners, offset = [], {}, 0
    for j, concept in enumerate(EXPLAINABLE):
        cfg = WorldConfig(seed=seed, prior_strength=1 / 8, forced=((CLASS_OF[concept], concept),))
        caches.append(render_cache(cfg, start + j * 1_000_000, per_concept, workers))
        owners[concept] = np.arange(offset, offset + per_concept)
        offset += per_concept
    pool = ImageCache(np.concatenate([c.images for c in caches]), np.concatenate([c.coverage for c in caches]),
                      [s for c in caches for s in c.scenes])
    return pool, owners


def train_explainer(model, processor, pool: ImageCache, owners, cfg: ZooTrainConfig, log: list) -> None:
    tok = processor.tokenizer
    rng = np.random.default_rng(cfg.seed + 23)
    torch.manual_seed(cfg.seed + 23)
    tower = model.model.vision_tower
    tower.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=8e-4, weight_decay=0.01)
    image_id = tok.convert_tokens_to_ids("<image>")

    def micro(step: int, _m: int):
        images, seqs = [], []
        for _ in range(cfg.batch):
            n = int(rng.choice([1, 2, 3, 4, 5], p=[0.05, 0.1, 0.2, 0.25, 0.4]))
            ims, answer = explainer_set(pool, owners, rng, n)
            images.append(ims)
            n_tok = (ims.shape[1] // tower.config.patch_size) ** 2
            seqs.append(build_sequence(tok, [(f"<s> user : {' '.join(['<image>'] * n)} {EXPLAIN_QUESTION} assistant :", f"{answer} </s>")], n_tok))
        with torch.no_grad():
            feats = tower(pixel_values=to_pixels(np.concatenate(images))).last_hidden_state[:, 1:]
        with _autocast():
            loss, acc = lm_loss(model, feats.reshape(-1, feats.shape[-1]), seqs, image_id, tok.pad_token_id)
        return loss, lambda: {"loss": loss.item(), "answer_token_accuracy": acc}

    train_loop(params, opt, cfg.explainer_steps, micro, label="explainer", log=log,
               lr_at=lambda step: cosine_lr(step, cfg.explainer_steps, 150, 8e-4))


def train_clip(model, processor, cache: ImageCache, cfg: ZooTrainConfig, log: list) -> None:
    """Contrastive image/caption training; captions drop attributes so single concepts are texts too."""
    tok = processor.tokenizer
    rng = np.random.default_rng(cfg.seed + 37)
    torch.manual_seed(cfg.seed + 37)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
    batch = 2 * cfg.batch

    def micro(step: int, _m: int):
        idx = rng.integers(len(cache), size=batch)
        texts = [partial_caption(cache.scenes[i], rng) for i in idx]
        enc = tok(texts, padding=True, return_tensors="pt")
        loss = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                     pixel_values=to_pixels(cache.images[idx]), return_loss=True).loss
        return loss, lambda: {"loss": loss.item()}

    train_loop(list(model.parameters()), opt, cfg.clip_steps, micro, label="clip", log=log,
               lr_at=lambda step: cosine_lr(step, cfg.clip_steps, 60, 5e-4))


def train_zoo(out: Path, cfg: ZooTrainConfig = ZooTrainConfig()) -> dict:
    """Train all three models into out/{subject,explainer,clip}; finished stages are kept on rerun."""
    torch.set_num_threads(cfg.threads)
    out.mkdir(parents=True, exist_ok=True)
    tok = build.build_tokenizer()
    timings: dict[str, float] = json.loads((out / "timings.json").read_text()) if (out / "timings.json").exists() else {}
    t0 = time.time()
    world = WorldConfig(seed=TRAIN_SEED)
    unbiased = WorldConfig(seed=TRAIN_SEED + 1, prior_strength=1 / 8)
    tower_cache = render_cache(unbiased, 0, cfg.tower_images, cfg.threads)
    timings["render_s"] = time.time() - t0

    def stage(name: str, fn) -> None:
        if (out / name).exists():
            return
        t = time.time()
        log: list[dict] = []

        def run(d: Path) -> None:
            fn(d, log)
            (d / "training_log.json").write_text(json.dumps(log))

        _save_atomic(run, out / name)
        timings[f"{name}_s"] = time.time() - t
        (out / "timings.json").write_text(json.dumps(timings, indent=1))

    sub_tower, sub_dec = build.SUBJECT
    stage("tower-subject", lambda d, log: pretrain_tower(
        sub_tower, tower_cache, cfg.tower_steps, cfg.batch * 2, cfg.seed, "8px", log, 0.15).save_pretrained(d))
    stage("tower-explainer", lambda d, log: pretrain_tower(
        build.EXPLAINER[0], tower_cache, cfg.tower_steps, cfg.batch * 2, cfg.seed + 1, "16px", log, 0.5).save_pretrained(d))

    def subject(d: Path, log: list) -> None:
        model, processor = build.build_llava(sub_tower, sub_dec, tok)
        model.set_attn_implementation("eager")  # SDPA's backward costs twice as much on the CPU here
        tower = CLIPVisionModel.from_pretrained(out / "tower-subject")
        model.model.vision_tower.load_state_dict(tower.state_dict())
        cache = render_cache(world, 0, cfg.subject_images, cfg.threads)
        feats = tower_features(tower, cache.images)
        train_subject(model, processor, feats, cache, cfg, log)
        model.set_attn_implementation("sdpa")
        model.save_pretrained(d, max_shard_size="10MB")  # keep every tracked file small
        processor.save_pretrained(d)

    def explainer(d: Path, log: list) -> None:
        model, processor = build.build_llava(*build.EXPLAINER, tok)
        model.set_attn_implementation("eager")
        model.model.vision_tower.load_state_dict(CLIPVisionModel.from_pretrained(out / "tower-explainer").state_dict())
        pool, owners = explainer_pool(0, cfg.explainer_pool, TRAIN_SEED + 2, cfg.threads)
        train_explainer(model, processor, pool, owners, cfg, log)
        model.set_attn_implementation("sdpa")
        model.save_pretrained(d, max_shard_size="10MB")  # keep every tracked file small
        processor.save_pretrained(d)

    def clip(d: Path, log: list) -> None:
        model, processor = build.build_clip(sub_tower, tok)
        model.vision_model.load_state_dict(CLIPVisionModel.from_pretrained(out / "tower-subject").state_dict())
        train_clip(model, processor, tower_cache, cfg, log)
        model.save_pretrained(d, max_shard_size="10MB")  # keep every tracked file small
        processor.save_pretrained(d)

    stage("subject", subject)
    stage("explainer", explainer)
    stage("clip", clip)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=1))
    return timings
