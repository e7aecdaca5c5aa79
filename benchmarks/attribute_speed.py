"""All features in one pass (mmsae.attribute) vs the per-feature loop (one forward + one backward per
feature, each giving −z_f·∂d/∂z_f at every position), on the zoo subject with a random TopK SAE at layer 3.

The loop is timed over --features features and extrapolated linearly to the SAE's width and to 2^17
latents; the ratio is the extrapolated loop over the one pass, both measured in this run (median of
--repeats). The loop's values are checked against the one pass's (max |difference|).

    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/attribute_speed.py [--n-latents 16384] [--features 100]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

LAYER = 3


def _sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def one_feature(adapter, sae, enc, readout, feature: int):
    """The per-feature loop's step: a forward where only feature f's codes are a leaf, and its backward.
    Returns attribution [B·S] of f at every column."""
    import torch

    from mmsae.attribute.core import frozen

    box = {}

    def edit(hidden_BSD, site):
        B, S, D = hidden_BSD.shape
        x_TD = hidden_BSD.detach().reshape(B * S, D).to(sae.W_enc.dtype)
        with torch.no_grad():
            codes = sae.encode(x_TD)
        coef_T = (codes.values * (codes.indices == feature)).sum(1)
        leaf_T = coef_T.clone().requires_grad_(True)
        box["z"], box["coef"] = leaf_T, coef_T
        w_D = sae.W_dec[feature].detach()
        # x' = x − z_f·w + z_f·w with the second z_f the leaf: x' equals x, ∂d/∂z_f = w·∂d/∂x
        return (x_TD + (leaf_T - coef_T)[:, None] * w_D).reshape(hidden_BSD.shape)

    with frozen(sae), adapter.intervene(LAYER, edit):
        logits = adapter.forward_logits(enc.inputs, grad=True)
    (grad_T,) = torch.autograd.grad(readout.value(logits).sum(), [box["z"]])
    return -(box["coef"] * grad_T)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-latents", type=int, default=2**14)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--features", type=int, default=100, help="features timed in the per-feature loop")
    ap.add_argument("--prompts", type=int, default=4, help="sequences per batch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--extrapolate", type=int, default=2**17, help="latent count the loop is extrapolated to")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from mmsae.attribute import attribute, make_readout
    from mmsae.defaults import default_model
    from mmsae.models import Prompt, load_adapter
    from mmsae.sae import SAE, SAEConfig
    from mmsae.util import pick_device
    from mmsae.world import World, WorldConfig
    from mmsae.world.text import chat_prompt

    torch.manual_seed(0)
    device = pick_device(args.device)
    adapter = load_adapter(default_model(), device=device)
    sae = SAE.from_config(SAEConfig(kind="topk", d_in=adapter.d_model, n_latents=args.n_latents, k=args.k,
                                    hook_layer=LAYER)).to(device).eval()
    world = World(WorldConfig(seed=5, forced=(("object", "star"),)))
    enc = adapter.encode([Prompt([world[i].pil], chat_prompt("is the star yellow ?")) for i in range(args.prompts)])
    readout = make_readout(adapter, enc, "yes", "no")

    def one_pass():
        _sync(device)
        t = time.perf_counter()
        attr = attribute(adapter, sae, LAYER, enc, "yes", "no")
        _sync(device)
        return time.perf_counter() - t, attr

    one_pass()  # warm-up (kernels, allocator)
    runs = [one_pass() for _ in range(args.repeats)]
    pass_s = float(np.median([r[0] for r in runs]))
    attr = runs[-1][1]
    # the loop over the most active features (any feature costs the same; these have values to compare)
    per = attr.per_feature().to_pydict()
    feats = [f for f in per["feature"] if f >= 0][: args.features]
    one_feature(adapter, sae, enc, readout, feats[0])  # warm-up
    loop_times, worst = [], 0.0
    t_all = attr.table().to_pydict()
    ex, fe, pos = (np.asarray(t_all[k]) for k in ("example", "feature", "position"))
    at = np.asarray(t_all["attribution"])
    mask = enc.inputs["attention_mask"].numpy().astype(bool)
    S = mask.shape[1]
    for _ in range(args.repeats):
        _sync(device)
        t = time.perf_counter()
        values = [one_feature(adapter, sae, enc, readout, f) for f in feats]
        _sync(device)
        loop_times.append(time.perf_counter() - t)
    for f, v in zip(feats, values):
        v_BS = v.detach().double().cpu().numpy().reshape(-1, S)
        sel = fe == f
        first = mask.argmax(1)
        worst = max(worst, float(np.abs(v_BS[ex[sel], pos[sel] + first[ex[sel]]] - at[sel]).max()))
    per_feature_s = float(np.median(loop_times)) / len(feats)
    result = {
        "benchmark": "attribute_speed", "device": device, "n_latents": args.n_latents, "k": args.k,
        "sequences": args.prompts, "seq_len": S, "layer": LAYER,
        "one_pass_s": pass_s, "per_feature_s": per_feature_s, "features_timed": len(feats),
        "loop_extrapolated_s": {str(args.n_latents): per_feature_s * args.n_latents,
                                str(args.extrapolate): per_feature_s * args.extrapolate},
        "ratio": {str(args.n_latents): per_feature_s * args.n_latents / pass_s,
                  str(args.extrapolate): per_feature_s * args.extrapolate / pass_s},
        "loop_vs_pass_max_abs_diff": worst,
    }
    line = json.dumps(result)
    print(line)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(line + "\n")


if __name__ == "__main__":
    main()
