"""The demo's first stages: the embedded world, the zoo's accuracies, the demo layer's activation stores and its
TopK SAE. A stage is `stage_x(rep: Report) -> None`; it adds a report section and flat metrics to `rep` and leaves
its outputs in `rep.out` for the stages after it."""

from __future__ import annotations

from pathlib import Path

from ..defaults import ZOO_WEIGHTS, zoo_model_dir
from .layer import DEMO_LAYER, DEMO_PROMPT, harvest_layer, train_layer
from .report import Report


def stage_world(rep: Report, n: int = 8) -> None:
    """A contact sheet of the default world's first scenes with their exact concept masks, and their specs."""
    from ..world import World, WorldConfig
    from ..world.sheet import write_samples

    world = World(WorldConfig())
    write_samples([world[i] for i in range(n)], rep.out / "world")
    rep.add("The embedded world", f"""
{n} scenes of the default world (seed 0, 64x64 pixels, 8-pixel patches). Each row: the image, then the exact
masks of every concept of the paper's six classes (scene, object, part, material, texture, colour), each instance
in its own colour. Specs, captions and Q/A pairs: `world/samples.jsonl`.

![world sample](world/sheet.png)
""")
    rep.metrics["world.samples"] = n


def zoo_metrics(root: Path = ZOO_WEIGHTS) -> dict:
    """The zoo's small evaluation on fresh held-out data, flat keys as in the model cards (a quicker, noisier
    evaluation than the cards': `mmsae zoo eval` recomputes the full one)."""
    from ..zoo.evaluate import EvalConfig, eval_clip, eval_explainer, eval_subject

    cfg = EvalConfig(subject_images=120, prior_images=80, explainer_sets=120, explainer_pool=12, clip_images=150)
    evals = {"subject": eval_subject, "explainer": eval_explainer, "clip": eval_clip}
    return {f"{name}.{k}": v for name, fn in evals.items() for k, v in fn(zoo_model_dir(name, root), cfg).items()}


def stage_zoo(rep: Report, root: Path = ZOO_WEIGHTS) -> None:
    """The zoo's accuracies, and a picture of the subject answering held-out questions."""
    metrics = zoo_metrics(root)
    rep.metrics.update({k: v for k, v in metrics.items() if not isinstance(v, dict) or k.endswith("accuracy") or k.endswith("top1")})
    _vqa_picture(rep.out / "vqa.png", root)
    rows = "\n".join(f"| `{k}` | {v:.3f} |" for k, v in metrics.items() if isinstance(v, float))
    rep.add("The zoo, evaluated now on fresh held-out data", f"""
Small evaluation (the model cards hold the full one; `mmsae zoo eval --json` recomputes it).

| metric | value |
|---|---|
{rows}

`subject.vqa_accuracy`: colour/shape/texture questions outside the prior-bias slice. `subject.prior_override_rate`:
share of "is the star yellow ?" answered "yes" when the only star is not yellow — the language prior at work
(the later hallucination study); `subject.prior_colour_override_rate`: share of "what colour is the star ?"
answered "yellow" on the same images.

![subject answers](vqa.png)
""")


def _vqa_picture(path: Path, root: Path, n: int = 8) -> None:
    """Held-out scenes with a question, the subject's answer and the truth (green right, red wrong)."""
    import numpy as np
    from PIL import Image, ImageDraw

    from ..world import World, WorldConfig
    from ..world.text import chat_prompt, questions
    from ..zoo.evaluate import generate_answers, load_llava
    from ..zoo.train import EVAL_SEED

    model, processor = load_llava(zoo_model_dir("subject", root))
    world = World(WorldConfig(seed=EVAL_SEED + 7))
    rng = np.random.default_rng(0)
    scenes = [world[i] for i in range(n)]
    qas = [next(q for q in questions(s, rng) if q.type in ("colour", "shape", "texture", "count")) for s in scenes]
    answers = generate_answers(model, processor, [s.pil for s in scenes], [chat_prompt(q.question) for q in qas])
    tile = 192
    sheet = Image.new("RGB", (n * (tile + 6), tile + 50), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (s, q, a) in enumerate(zip(scenes, qas, answers)):
        x = i * (tile + 6)
        sheet.paste(s.pil.resize((tile, tile), Image.NEAREST), (x, 0))
        draw.text((x, tile + 2), q.question[:34], fill="black")
        draw.text((x, tile + 16), f"model: {a}", fill="green" if a == q.answer else "red")
        draw.text((x, tile + 30), f"truth: {q.answer}", fill="black")
    sheet.save(path)


def stage_harvest(rep: Report, n_train: int = 400, n_eval: int = 100) -> None:
    """Activation stores of the demo layer: `store/` (training) and `store-eval/` (held out)."""
    from ..store import ActivationStore

    harvest_layer(rep.out / "store", DEMO_LAYER, n_train, seed=7)
    harvest_layer(rep.out / "store-eval", DEMO_LAYER, n_eval, seed=8)
    store = ActivationStore(rep.out / "store")
    counts = store.manifest["counts"]
    rep.metrics.update({f"harvest.{kind}.{mod}": n for kind, per in counts.items() for mod, n in per.items()})
    rows = "\n".join(f"| {mod} | {counts['tokens'][mod]} | {counts['rows'][mod]} |" for mod in counts["tokens"])
    rep.add("Harvest: the subject's residual stream", f"""
`mmsae harvest` ran the zoo subject on {n_train} world scenes (plus {n_eval} held-out ones for evaluation) with
the prompt `{DEMO_PROMPT}` and stored the output of decoder block {DEMO_LAYER} (0-indexed; "layer
{DEMO_LAYER + 1}" in the papers) for every image and text token, d_in = {store.d_in}:

| modality | tokens in the table | rows kept for training (special tokens excluded) |
|---|---|---|
{rows}
""")


def stage_sae(rep: Report, steps: int = 800) -> None:
    """The demo layer's TopK SAE (`sae/sae/`), evaluated on the held-out store."""
    import shutil

    from ..evals import evaluate_sae, format_table, store_batches

    sae = train_layer(rep.out / "store", rep.out / "sae", DEMO_LAYER, steps)
    report = evaluate_sae(sae, store_batches(rep.out / "store-eval"))
    shutil.copy(rep.out / "sae" / "curves.png", rep.out / "sae_curves.png")
    for split, m in report["metrics"].items():
        for key in ("fvu", "l0", "dead_fraction"):
            if m.get(key) is not None:
                rep.metrics[f"sae.{split}.{key}"] = m[key]
    rep.add("A TopK SAE on that layer", f"""
TopK SAE ({sae.cfg.n_latents} latents, k = {sae.cfg.k}, AuxK on), {steps} steps of 1024 tokens, evaluated on the
held-out store (FVU mean-centred with float64 sums; L0 per token; dead = never fired on the eval set):

```
{format_table(report)}
```

![training curves](sae_curves.png)
""")
