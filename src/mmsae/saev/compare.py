"""SAE vs SAE-V (the paper's first claim): one SAE trained on text-only activations (captions through the
same LMM, without images) and one on image+text activations, same architecture and token budget (same
steps x batch), both evaluated on image+text and on text-only data, split by modality.

Metric keys (flat): `<model>.<metric>_<split>` where model is sae_text / saev (+ `_relu` for ReLU+L1),
split is `text` / `image` / `all` on the image+text data and `textonly` on the text-only data, metric is
fvu, l0, dead (fraction of latents that never fired), ce_recovered (CE loss recovered vs zero ablation,
text tokens scored, the split's positions replaced) and kl (KL(clean || spliced) on those tokens)."""

from __future__ import annotations

import json
from pathlib import Path

from mmsae.evals import evaluate_sae, evaluate_splice, store_batches

TEXT_TEMPLATE = "<s> user : {caption}"  # DEMO_PROMPT without the image


def text_only_jsonl(path: str | Path, n: int, seed: int, template: str = TEXT_TEMPLATE) -> Path:
    """n world captions as a JSONL source without images (LLaVA format, one human turn each)."""
    from mmsae.io import write_atomic
    from mmsae.world import World, WorldConfig
    from mmsae.world.text import caption

    world = World(WorldConfig(seed=seed))
    rows = [{"id": f"text-{seed}-{i}", "conversations": [{"from": "human",
                                                          "value": template.format(caption=caption(world[i]))}]}
            for i in range(n)]
    write_atomic(Path(path), "".join(json.dumps(r) + "\n" for r in rows))
    return Path(path)


def train_sae(store: str | Path, out: str | Path, kind: str, steps: int, layer: int, *, batch: int = 1024,
              expansion: int = 8, k: int = 16, l1: float | None = None, seed: int = 0):
    from mmsae.train import StoreBatches, TrainConfig, train

    cfg = TrainConfig(kind=kind, expansion=expansion, k=k if kind == "topk" else None, l1_coefficient=l1,
                      steps=steps, warmup_steps=min(100, steps // 5), checkpoint_every=max(steps, 1), plots=False,
                      hook_layer=layer, seed=seed)
    return train(cfg, StoreBatches(store, batch_size=batch, seed=seed), out)


def reconstruction(sae, store: str | Path) -> dict:
    """{split: {fvu, l0, dead}} over a store (special tokens excluded)."""
    report = evaluate_sae(sae, store_batches(store))
    return {split: {"fvu": m.get("fvu"), "l0": m.get("l0"), "dead": m.get("dead_fraction")}
            for split, m in report["metrics"].items() if m.get("n_tokens")}


def splice(adapter, sae, source, layer: int, n_records: int) -> dict:
    """{split: {ce_recovered, delta_ce, kl}} with the SAE spliced in on the split's positions. delta_ce (CE with
    the SAE minus clean CE, nats) is the well-conditioned one: ce_recovered divides by how much zero-ablating the
    split hurts, which is small when few positions are replaced (text-only captions), and then swings far
    outside [0, 1]."""
    out = evaluate_splice(adapter, sae, source, layer, n_records, batch_size=8)
    return {split: {"ce_recovered": out[split].get("ce_loss_recovered_zero"), "delta_ce": out[split].get("delta_lm_loss"),
                    "kl": out[split].get("kl_sae")}
            for split in ("all", "text", "image") if out.get(split, {}).get("n_tokens")}


def compare(saes: dict, stores: dict[str, str | Path], adapter=None, sources: dict | None = None,
            layer: int | None = None, splice_records: int = 32) -> dict[str, float]:
    """Flat metrics of every SAE on the image+text store (`stores["image_text"]`) and the text-only store
    (`stores["text"]`); with an adapter and sources of the same names, also CE/KL recovered."""
    metrics: dict[str, float] = {}
    for name, sae in saes.items():
        for data, store in stores.items():
            for split, values in reconstruction(sae, store).items():
                if data == "text" and split != "text":
                    continue
                for metric, v in values.items():
                    metrics[f"{name}.{metric}_{'textonly' if data == 'text' else split}"] = v
            if adapter is not None and sources and data in sources:
                for split, values in splice(adapter, sae, sources[data], layer, splice_records).items():
                    if data == "text" and split != "text":
                        continue
                    for metric, v in values.items():
                        metrics[f"{name}.{metric}_{'textonly' if data == 'text' else split}"] = v
    return metrics


def table(metrics: dict[str, float], models: list[str]) -> str:
    """A markdown table: one row per model, one column per metric_split."""
    cols = sorted({k.split(".", 1)[1] for k in metrics if k.split(".", 1)[0] in models})
    head = "| model | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols)
    rows = [f"| {m} | " + " | ".join("-" if metrics.get(f"{m}.{c}") is None else f"{metrics[f'{m}.{c}']:.3f}"
                                     for c in cols) + " |" for m in models]
    return head + "\n" + "\n".join(rows)
