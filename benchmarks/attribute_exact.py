"""How well the one-pass estimate (−z·∂d/∂z summed over positions) predicts the exact effect of zeroing a
feature, on the zoo subject with a real layer-3 TopK SAE, over world VQA prompts ("is the star yellow ?"
and the other question types whose answer is one token).

d = logit(answer) − logit(alternative): the other of yes/no, or another value of the answer's class. Per
prompt, the top-N features by |estimate| and N random other active ones are rerun with the feature zeroed
at every position (error kept). Reports Pearson and Spearman (pooled over prompts and features, and the
median per prompt) for the top and the random features; when the top features' Pearson is below 0.8, the
same for integrated gradients (--ig-steps). One JSON line on stdout, also written to --out.

    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/attribute_exact.py --work DIR [--sae DIR] [--prompts 32]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

LAYER = 3  # the demo's layer (mmsae.pipeline.layer.DEMO_LAYER)


def pearson(x, y) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def ranks(x) -> np.ndarray:
    """Ranks with ties averaged (as scipy's rankdata), so Spearman needs numpy only."""
    x = np.asarray(x, float)
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=r)
    return sums[inv] / counts[inv]


def spearman(x, y) -> float:
    return pearson(ranks(x), ranks(y))


def get_sae(args):
    from mmsae.pipeline.layer import harvest_layer, train_layer
    from mmsae.sae import SAE

    if args.sae is not None:
        return SAE.from_pretrained(args.sae).eval(), str(args.sae)
    sae_dir = args.work / "sae" / "sae"
    if not (sae_dir / "config.json").exists():
        store = harvest_layer(args.work / "store", LAYER, args.harvest_scenes)
        train_layer(store, args.work / "sae", LAYER, steps=args.train_steps, k=args.k, expansion=args.expansion)
    return SAE.from_pretrained(sae_dir).eval(), str(sae_dir)


def world_prompts(n: int, adapter, seed: int):
    """(Prompt, answer, alternative, question type) for n world questions with one-token answers; every
    other scene has a star so that the prior question "is the star yellow ?" comes up often."""
    from mmsae.models import Prompt
    from mmsae.world import CONCEPT_CLASSES, World, WorldConfig
    from mmsae.world.text import chat_prompt, questions
    from mmsae.world.vocab import COUNTS

    values = {"colour": CONCEPT_CLASSES["colour"], "shape": CONCEPT_CLASSES["object"],
              "texture": CONCEPT_CLASSES["texture"], "material": CONCEPT_CLASSES["material"],
              "size": CONCEPT_CLASSES["size"], "scene": CONCEPT_CLASSES["scene"], "count": COUNTS}
    one = lambda w: len(adapter.tokenizer.encode(w, add_special_tokens=False)) == 1  # noqa: E731
    worlds = [World(WorldConfig(seed=seed)), World(WorldConfig(seed=seed + 1, forced=(("object", "star"),)))]
    rng = np.random.default_rng(seed)
    out, i = [], 0
    while len(out) < n:
        scene = worlds[i % 2][i // 2]
        i += 1
        qas = questions(scene, rng)
        # the prior question first when there is one, then one other type per scene
        qas.sort(key=lambda q: q.type != "prior")
        for qa in qas[:2]:
            if qa.answer in ("yes", "no"):
                alt = "no" if qa.answer == "yes" else "yes"
            elif qa.type in values:
                others = [v for v in values[qa.type] if v != qa.answer and one(v)]
                alt = others[rng.integers(len(others))] if others else None
            else:
                alt = None
            if alt is None or not one(qa.answer):
                continue
            out.append((Prompt([scene.pil], chat_prompt(qa.question)), qa.answer, alt, qa.type))
            if len(out) == n:
                break
    return out


def correlations(pred, exact) -> dict:
    return {"pearson": pearson(pred, exact), "spearman": spearman(pred, exact), "n": int(len(pred))}


def evaluate(adapter, sae, items, args, ig_steps: int = 0) -> dict:
    """Estimates and exact effects of the top and random features of every prompt, and their correlations."""
    from mmsae.attribute import ERROR, attribute, exact_effects, make_readout

    rng = np.random.default_rng(args.seed)
    pooled = {"top": ([], []), "random": ([], [])}
    per_prompt = []
    for lo in range(0, len(items), args.batch):
        chunk = items[lo : lo + args.batch]
        enc = adapter.encode([c[0] for c in chunk])
        targets, alts = [c[1] for c in chunk], [c[2] for c in chunk]
        attr = attribute(adapter, sae, LAYER, enc, targets, alts, exact_top=args.top, ig_steps=ig_steps,
                         exact_batch=args.exact_batch)
        randoms = []
        for b in range(len(chunk)):
            per = attr.per_feature(b).to_pydict()
            top = set(attr.top_features(b, args.top))
            rest = [f for f in per["feature"] if f != ERROR and f not in top]
            randoms.append([int(f) for f in rng.permutation(rest)[: args.random]])
        readout = make_readout(adapter, enc, targets, alts)
        rand_exact = exact_effects(adapter, sae, LAYER, enc, randoms, readout, batch=args.exact_batch)
        for b in range(len(chunk)):
            per = attr.per_feature(b).to_pydict()
            est = dict(zip(per["feature"], per["attribution"]))
            top = attr.top_features(b, args.top)
            exact_top = dict(zip(per["feature"], per["exact_effect"]))
            p_top, e_top = [est[f] for f in top], [exact_top[f] for f in top]
            p_rand, e_rand = [est[f] for f in randoms[b]], list(rand_exact[b])
            pooled["top"][0].extend(p_top), pooled["top"][1].extend(e_top)
            pooled["random"][0].extend(p_rand), pooled["random"][1].extend(e_rand)
            per_prompt.append(pearson(p_top, e_top))
    out = {name: correlations(*pooled[name]) for name in pooled}
    out["all"] = correlations(pooled["top"][0] + pooled["random"][0], pooled["top"][1] + pooled["random"][1])
    out["top"]["median_per_prompt_pearson"] = float(np.nanmedian(per_prompt)) if per_prompt else float("nan")
    out["top"]["mean_abs_exact"] = float(np.mean(np.abs(pooled["top"][1])))
    out["random"]["mean_abs_exact"] = float(np.mean(np.abs(pooled["random"][1]))) if pooled["random"][1] else 0.0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="cache dir: the harvested store and trained SAE")
    ap.add_argument("--sae", type=Path, default=None, help="a layer-3 SAE of the subject instead of training one")
    ap.add_argument("--out", type=Path, default=None, help="JSON file (default WORK/attribute_exact.json)")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--top", type=int, default=50)
    ap.add_argument("--random", type=int, default=50)
    ap.add_argument("--ig-steps", type=int, default=8)
    ap.add_argument("--force-ig", action="store_true", help="report integrated gradients whatever the Pearson")
    ap.add_argument("--batch", type=int, default=8, help="prompts per attribution pass")
    ap.add_argument("--exact-batch", type=int, default=8, help="copies of the batch per rerun forward")
    ap.add_argument("--harvest-scenes", type=int, default=400)
    ap.add_argument("--train-steps", type=int, default=800)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--expansion", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    import torch

    from mmsae.defaults import default_model
    from mmsae.models import load_adapter
    from mmsae.util import pick_device

    torch.manual_seed(args.seed)
    args.work.mkdir(parents=True, exist_ok=True)
    sae, sae_path = get_sae(args)
    adapter = load_adapter(default_model(), device=pick_device(args.device))
    items = world_prompts(args.prompts, adapter, seed=100 + args.seed)
    result = {"benchmark": "attribute_exact", "sae": sae_path, "n_latents": sae.cfg.n_latents, "k": sae.cfg.k,
              "layer": LAYER, "prompts": len(items), "types": sorted({c[3] for c in items}),
              "attribution": evaluate(adapter, sae, items, args)}
    result["ig"] = None
    if (args.force_ig or not result["attribution"]["top"]["pearson"] >= 0.8) and args.ig_steps > 0:
        result["ig"] = {"steps": args.ig_steps, **evaluate(adapter, sae, items, args, ig_steps=args.ig_steps)}
    line = json.dumps(result)
    print(line)
    out = args.out or args.work / "attribute_exact.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(line + "\n")


if __name__ == "__main__":
    main()
