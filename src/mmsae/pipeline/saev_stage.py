"""Demo stage `saev`: SAE vs SAE-V at a reduced size, cross-modal weights, and patch filtering.

Reads what earlier stages left in rep.out when present (`store/`, `store-eval/`: image+text stores of the
demo layer) and harvests its own otherwise; everything else it makes under rep.out/saev/."""

from __future__ import annotations

from pathlib import Path


SAEV = "saev_relu"  # the SAE-V the cross-modal weights, patch scores and the finetune stage's record scores use


def _demo():
    from .layer import DEMO_LAYER, DEMO_PROMPT

    return DEMO_LAYER, DEMO_PROMPT


def _harvest(out: Path, data: str, prompt: str | None, layer: int) -> Path:
    from mmsae.store import HarvestConfig, harvest

    if not (out / "manifest.json").exists():
        harvest(HarvestConfig(out=str(out), layer=layer, data=data, prompt=prompt, progress=False))
    return out


def _plot_crossmodal(path: Path, weights, n_text, k: int, minimum: int) -> None:
    """Left: how many of each feature's top-k tokens are text (a weight needs >= minimum text and image);
    right: the weights of the features that have one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3))
    a.hist(n_text, bins=range(0, k + 2), color="tab:blue")
    for x in (minimum, k - minimum + 1):
        a.axvline(x, color="k", linestyle="--", linewidth=1)
    a.set_xlabel(f"text tokens among the top {k}")
    a.set_ylabel("features")
    a.set_yscale("log")
    if len(weights):
        b.hist(weights, bins=30, color="tab:purple")
    else:  # an empty histogram would draw a meaningless axis
        b.text(0.5, 0.5, "no feature has a weight", ha="center", va="center", transform=b.transAxes)
        b.set_yticks([])
    b.set_xlabel("cross-modal weight (mean 5x5 cosine)")
    b.set_title(f"{len(weights)} features weighted", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_patches(path: Path, acc: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for method, per in acc.items():
        keeps = sorted(per)
        ax.plot([k * 100 for k in keeps], [per[k] for k in keeps], marker="o", label=method,
                linestyle="--" if method == "random" else "-")
    ax.set_xlabel("% of patches kept")
    ax.set_ylabel("accuracy")
    ax.invert_xaxis()
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def stage_saev(rep, n_train: int = 300, n_text: int = 1200, n_eval: int = 80, steps: int = 300,
               n_index: int = 150, n_patch: int = 120, splice_records: int = 32) -> None:
    import numpy as np
    import torch

    from mmsae.data import open_source
    from mmsae.defaults import default_model
    from mmsae.index import IndexConfig, build_index, open_index, text_contexts
    from mmsae.index import top_features
    from mmsae.index.crossmodal import crossmodal_weights, read_crossmodal, top_crossmodal
    from mmsae.models import load_adapter
    from mmsae.saev.compare import compare, table, text_only_jsonl, train_sae
    from mmsae.saev.crossmodal import CrossmodalConfig, run_crossmodal
    from mmsae.saev.patches import patch_experiment, world_items

    torch.manual_seed(0)
    layer, prompt = _demo()
    root = rep.out / "saev"
    root.mkdir(parents=True, exist_ok=True)
    it_train = rep.out / "store" if (rep.out / "store" / "manifest.json").exists() else \
        _harvest(root / "store", f"world:n={n_train},seed=7", prompt, layer)
    it_eval = rep.out / "store-eval" if (rep.out / "store-eval" / "manifest.json").exists() else \
        _harvest(root / "store-eval", f"world:n={n_eval},seed=8", prompt, layer)
    txt_train = _harvest(root / "store-text", str(text_only_jsonl(root / "text-train.jsonl", n_text, 7)), None, layer)
    txt_eval = _harvest(root / "store-text-eval", str(text_only_jsonl(root / "text-eval.jsonl", n_eval, 8)), None, layer)

    saes = {}
    for kind, suffix in (("topk", ""), ("relu", "_relu")):
        saes[f"sae_text{suffix}"] = train_sae(txt_train, root / f"sae_text{suffix}", kind, steps, layer)
        saes[f"saev{suffix}"] = train_sae(it_train, root / f"saev{suffix}", kind, steps, layer)
    adapter = load_adapter(default_model(), device="cpu")
    sources = {"image_text": open_source(f"world:n={n_eval},seed=8", prompt=prompt),
               "text": open_source(str(root / "text-eval.jsonl"))}
    m = compare(saes, {"image_text": it_eval, "text": txt_eval}, adapter, sources, layer, splice_records)
    rep.metrics.update({f"saev.{k}": v for k, v in m.items()})

    # Cross-modal weights of the SAE-V over an index of held-out scenes: the ReLU+L1 one, the paper's SAE-V
    # (a TopK SAE's per-token L0 is k everywhere, so the l0 scores below would tell nothing apart).
    index = root / "index-saev"
    build_index(IndexConfig(out=str(index), sae=str(root / SAEV), model=default_model(),
                            data=f"world:n={n_index},seed=9", prompt=prompt, top_n=5, n_text=5, progress=False))
    cm_cfg = CrossmodalConfig(index=str(index), progress=False)
    run_crossmodal(cm_cfg)
    con = open_index(index)
    try:
        w_F = crossmodal_weights(con, saes[SAEV].cfg.n_latents)
        n_text_F = read_crossmodal(con)["n_text"]
        top = top_crossmodal(con, 8)
        contexts = {t["feature"]: [c.token for c in text_contexts(con, t["feature"], 5)] for t in top}
        both = sum(1 for f in top_features(con) if f.n_text_fires and f.n_image_fires)
    finally:
        con.close()
    w = w_F[~np.isnan(w_F)]
    _plot_crossmodal(rep.out / "saev_crossmodal.png", w, n_text_F, cm_cfg.k, cm_cfg.min_modality)
    rep.metrics.update({"saev.crossmodal.n_weighted": int(len(w)), "saev.crossmodal.n_features": int(len(w_F)),
                        "saev.crossmodal.fire_on_both": int(both),
                        "saev.crossmodal.mean": float(w.mean()) if len(w) else None,
                        "saev.crossmodal.max": float(w.max()) if len(w) else None})
    rows = "\n".join(f"| {t['feature']} | {t['weight']:.3f} | {t['n_text']} | {t['n_image']} | "
                     f"{' '.join(contexts[t['feature']])} | {t['explanation'] or '-'} |" for t in top)

    # Patch filtering: the subject names the object of a given colour on masked images (the world's analogue of
    # the paper's ImageNet classification; the scene question asks about the background, which object-heavy
    # patches do not show: benchmarks/saev_patches.py --question scene measures that too).
    items = world_items(n_patch, seed=21, kind="object")
    res = patch_experiment(adapter, saes[SAEV], items, weights_F=w_F, seed=0, save_dir=root / "masked", save_n=2)
    acc = res["accuracy"]
    rep.metrics.update({f"saev.patch.{meth}.{int(round(k * 100))}": v for meth, per in acc.items() for k, v in per.items()})
    _plot_patches(rep.out / "saev_patches.png", acc)

    models = list(saes)
    f = lambda k: rep.metrics.get(f"saev.{k}")  # noqa: E731
    verdict = []
    for arch in ("", "_relu"):
        a, b = f(f"sae_text{arch}.fvu_image"), f(f"saev{arch}.fvu_image")
        c, d = f(f"sae_text{arch}.fvu_textonly"), f(f"saev{arch}.fvu_textonly")
        name = "TopK" if not arch else "ReLU+L1"
        verdict.append(f"- {name}: FVU on image tokens {b:.3f} (SAE-V) vs {a:.3f} (text SAE) — "
                       f"{'SAE-V wins' if b < a else 'SAE-V does not win'}; on text-only data {d:.3f} vs {c:.3f} "
                       f"({'SAE-V transfers at least as well' if d <= c else 'the text SAE is better there'}).")
    p25 = {meth: per.get(0.25) for meth, per in acc.items()}
    rep.add("SAE-V: image+text SAEs, cross-modal features, patch filtering", f"""
Reduced size: {steps} steps x 1024 tokens per SAE (same budget for both), expansion 8, TopK k = 16 and ReLU+L1
(coefficient 5, L1 weighted by decoder norms). The text SAE trains on {n_text} captions through the subject
without images (`<s> user : {{caption}}`), the SAE-V on image+text (`{prompt}`). Evaluated on held-out
image+text data (splits text / image / all) and text-only captions (`textonly`); FVU mean-centred, L0 per token,
dead = never fired on that data, ce_recovered = CE loss recovered vs zero ablation on text tokens with the split's
positions spliced (it divides by the harm of zero-ablating the split, which is small on short text-only captions,
so there it swings far outside [0, 1]: read delta_ce, the CE with the SAE spliced minus the clean CE, in nats),
kl = KL(clean || spliced). Special tokens and padding are excluded everywhere; the chat format's role words
(`user`, `:`) are ordinary tokens of the zoo's vocabulary and count as text.

{table(m, models)}

{chr(10).join(verdict)}

**Cross-modal weights** (SAE-V ReLU+L1, index of {n_index} held-out scenes, top-30 tokens, >= 5 text and 5 image,
mean of 5x5 cosines of the raw layer activations): {len(w)} of {len(w_F)} features have a weight
{f'(mean {np.mean(w):.3f})' if len(w) else ''}. {both} features fire on both text and image tokens somewhere in
the index; the left panel counts the text tokens among each feature's top {cm_cfg.k} (a weight needs
{cm_cfg.min_modality} to {cm_cfg.k - cm_cfg.min_modality} of them): where it is 0 or {cm_cfg.k} the feature's strongest
activations are all in one modality.

![cross-modal weights](saev_crossmodal.png)

| feature | weight | text in top 30 | image in top 30 | top text tokens | explanation |
|---|---|---|---|---|---|
{rows or '| - | - | - | - | - | no feature has a weight |'}

**Patch filtering** (SAE-V ReLU+L1, {res['n_images']} scenes, "what object is <colour> ?", greedy answer of the
subject): accuracy with 100/75/50/25 % of the patches kept by each score, the rest blacked out in the original
pixels. At 25 % kept: {', '.join(f'{k} {v:.2f}' for k, v in p25.items())}.{'' if 'cosine' in acc else
' The cosine score is left out: no feature has a cross-modal weight, so every patch would score 0.'}

![patch filtering](saev_patches.png)
""")
