"""Patch filtering (SAE-V): score each image patch of a record by its SAE codes, keep the best fraction
of patches and black out the rest in the original image's pixels (through the token table's boxes).

Patch scores, on the patch's own image token:
    l0      number of active latents (value > 0)
    l1      sum of its codes
    cosine  sum of the cross-modal weights of its active latents (null weights count 0)
    random  a seeded permutation (the baseline)
Multi-view adapters (anyres tiles) give several tokens per pixel; only the tokens of `tile` (default 0,
the first view, which covers the whole image) are scored and masked.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from mmsae.models.table import IMAGE

METHODS = ("l0", "l1", "cosine", "random")


@dataclass
class PatchScores:
    """The scored patches of one image of one record."""

    record_id: str
    image_index: int
    image: Image.Image  # the original
    box_P4: np.ndarray  # x0 y0 x1 y1 in original pixels (NaN: covers none)
    scores: dict[str, np.ndarray]  # method -> [P]


def patch_scores(coded, weights_F: np.ndarray | None = None, tile: int = 0, seed: int = 0) -> list[PatchScores]:
    """Patch scores of every image of a coded record (mmsae.saev.scoring.Coded) by every method (cosine
    only when weights are given)."""
    t = coded.table
    out = []
    for m in range(len(coded.record.images)):
        sel = np.flatnonzero((t.modality == IMAGE) & (t.image_index == m) & (t.tile == tile))
        codes_PF = coded.codes_TF[torch.as_tensor(sel, device=coded.codes_TF.device)]
        active = (codes_PF > 0).cpu().numpy()
        scores = {"l0": active.sum(1).astype(np.float64), "l1": codes_PF.sum(1).double().cpu().numpy()}
        if weights_F is not None:
            scores["cosine"] = np.where(active, np.nan_to_num(weights_F, nan=0.0)[None], 0.0).sum(1)
        rng = np.random.default_rng([seed, m, zlib.crc32(coded.id.encode())])  # not hash(): salted per process
        scores["random"] = rng.permutation(len(sel)).astype(np.float64)
        out.append(PatchScores(coded.id, m, coded.record.images[m], t.box[sel], scores))
    return out


def kept(scores_P: np.ndarray, keep: float) -> np.ndarray:
    """bool [P]: the round(keep x P) best patches (at least one); ties go to the earlier patch."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep!r}")
    n = len(scores_P)
    k = max(1, int(math.floor(keep * n + 0.5))) if n else 0
    order = np.lexsort((np.arange(n), -np.asarray(scores_P, np.float64)))
    mask = np.zeros(n, bool)
    mask[order[:k]] = True
    return mask


def mask_image(image: Image.Image, box_P4: np.ndarray, keep_P: np.ndarray) -> Image.Image:
    """The original image with every pixel outside the kept patches' boxes set to black."""
    arr = np.asarray(image.convert("RGB")).copy()
    H, W = arr.shape[:2]
    visible = np.zeros((H, W), bool)
    for x0, y0, x1, y1 in box_P4[keep_P]:
        if np.isnan(x0):
            continue
        visible[int(math.floor(y0)):min(H, int(math.ceil(y1))), int(math.floor(x0)):min(W, int(math.ceil(x1)))] = True
    arr[~visible] = 0
    return Image.fromarray(arr)


@torch.no_grad()
def answer(adapter, images: list[Image.Image], prompts: list[str], max_new_tokens: int = 4, batch: int = 32) -> list[str]:
    """Greedy answers of the adapter's model (left padding), special tokens stripped, whitespace squeezed."""
    from mmsae.models import Prompt

    out = []
    tok = adapter.tokenizer
    for i in range(0, len(prompts), batch):
        enc = adapter.encode([Prompt([im], p) for im, p in zip(images[i:i + batch], prompts[i:i + batch])],
                             padding_side="left")
        gen = adapter.generate(enc.inputs, max_new_tokens=max_new_tokens, do_sample=False,
                               pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        new = gen[:, enc.inputs["input_ids"].shape[1]:]
        out += [" ".join(tok.decode(row, skip_special_tokens=True).replace(" - ", "-").split()) for row in new]
    return out


def world_items(n: int, seed: int, kind: str = "scene") -> list[tuple[Image.Image, str, str, str]]:
    """(image, question, answer, id) of n world scenes: the scene question ("what is the background ?")
    or, with kind="object", "what object is <colour> ?" where the colour names one object."""
    from mmsae.world import World, WorldConfig
    from mmsae.world.text import questions

    world, rng, out = World(WorldConfig(seed=seed)), np.random.default_rng(seed), []
    i = 0
    while len(out) < n:
        scene = world[i]
        qa = next((q for q in questions(scene, rng) if q.type == ("scene" if kind == "scene" else "shape")), None)
        if qa is not None:
            out.append((scene.pil, qa.question, qa.answer, f"world-{seed}-{i}"))
        i += 1
    return out


def patch_experiment(adapter, sae, items, keeps=(1.0, 0.75, 0.5, 0.25), weights_F=None, seed: int = 0,
                     batch_size: int = 16, save_dir=None, save_n: int = 4) -> dict:
    """Accuracy of the model on its own questions with only the kept patches visible, per method and
    keep fraction ({method: {keep: accuracy}}); `save_dir` gets the masked images of the first `save_n`."""
    from mmsae.data import Record
    from mmsae.models.base import IMAGE_PLACEHOLDER
    from mmsae.world.text import chat_prompt

    from .scoring import ListSource, coded_records, sae_layer

    layer = sae_layer(sae)
    prompts = [chat_prompt(q).replace("<image>", IMAGE_PLACEHOLDER) for _, q, _, _ in items]
    records = [Record(rid, [im], p) for (im, _, _, rid), p in zip(items, prompts)]
    scored: list[PatchScores] = []
    problems: list[dict] = []
    reject = lambda i, rid, reason: problems.append({"index": i, "id": rid, "reason": reason})  # noqa: E731
    for _, coded in coded_records(adapter, sae, ListSource(records), range(len(records)), layer, reject, batch_size):
        scored += [patch_scores(c, weights_F, seed=seed)[0] for c in coded]
    by_id = {s.record_id: s for s in scored}
    # cosine needs at least one weighted feature: with none, every patch scores 0 and the tie order alone
    # (earlier patches first: the top rows) would pass for a method
    has_weights = weights_F is not None and bool(np.isfinite(np.asarray(weights_F, np.float64)).any())
    methods = [m for m in METHODS if m != "cosine" or has_weights]
    result: dict = {}
    truth = {rid: a for _, _, a, rid in items}
    prompt_of = {r.id: r.text for r in records}
    ids = list(by_id)
    accuracy_full = None  # every patch kept: the same images whatever the method, answered once
    for method in methods:
        result[method] = {}
        for keep in keeps:
            masked = [mask_image(by_id[r].image, by_id[r].box_P4, kept(by_id[r].scores[method], keep)) for r in ids]
            if keep >= 1.0 and accuracy_full is not None:
                result[method][keep] = accuracy_full
            else:
                answers = answer(adapter, masked, [prompt_of[r] for r in ids], batch=batch_size)
                acc = float(np.mean([a == truth[r] for a, r in zip(answers, ids)])) if ids else float("nan")
                result[method][keep] = acc
                accuracy_full = acc if keep >= 1.0 else accuracy_full
            if save_dir is not None:
                from pathlib import Path

                d = Path(save_dir) / method / f"keep{int(round(keep * 100))}"
                d.mkdir(parents=True, exist_ok=True)
                for im, r in list(zip(masked, ids))[:save_n]:
                    im.save(d / f"{r}.png")
    return {"accuracy": result, "n_images": len(by_id), "rejects": problems}
