"""`mmsae demo`: the main job on the embedded default, one stage after another, into report.md + metrics.json."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from rich.console import Console

from .io import atomic_dir, write_json
from .world import World, WorldConfig
from .world.cli import write_samples
from .zoo import WEIGHTS, model_dir

console = Console(stderr=True)


@dataclass
class Report:
    """What the stages produce: markdown sections, flat metrics and the pictures they refer to."""

    out: Path
    sections: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)

    def add(self, title: str, body: str) -> None:
        self.sections.append(f"## {title}\n\n{body.strip()}\n")


def stage_world(rep: Report, n: int = 8) -> None:
    world = World(WorldConfig())
    write_samples([world[i] for i in range(n)], rep.out / "world")
    rep.add("The embedded world", f"""
{n} scenes of the default world (seed 0, 64x64 pixels, 8-pixel patches). Each row: the image, then the exact
masks of every concept of the paper's six classes (scene, object, part, material, texture, colour), each instance
in its own colour. Specs, captions and Q/A pairs: `world/samples.jsonl`.

![world sample](world/sheet.png)
""")
    rep.metrics["world.samples"] = n


def stage_zoo(rep: Report, root: Path = WEIGHTS) -> None:
    from .zoo.cli import evaluate

    metrics = evaluate(root, small=True)
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
    from .world.text import chat_prompt, questions
    from .zoo.evaluate import generate_answers, load_llava
    from .zoo.train import EVAL_SEED

    model, processor = load_llava(model_dir("subject", root))
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


DEMO_LAYER = 3  # output of decoder block 3 of the subject's 6 ("layer 4" in the papers' naming)
DEMO_PROMPT = "<s> user : <image> {caption}"  # image and text tokens, as SAE-V trains on


def harvest_layer(out: Path, layer: int, n: int = 400, seed: int = 7) -> Path:
    from .store import HarvestConfig, harvest

    harvest(HarvestConfig(out=str(out), layer=layer, data=f"world:n={n},seed={seed}", prompt=DEMO_PROMPT, progress=False))
    return out


def train_layer(store: Path, out: Path, layer: int, steps: int = 800, k: int = 16):
    from .train import StoreBatches, TrainConfig, train

    cfg = TrainConfig(kind="topk", expansion=8, k=k, steps=steps, warmup_steps=100, checkpoint_every=500,
                      hook_layer=layer, seed=0)
    return train(cfg, StoreBatches(store, batch_size=1024, seed=0), out)


def stage_harvest(rep: Report, n_train: int = 400, n_eval: int = 100) -> None:
    from .store import ActivationStore

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
    import shutil

    from .evals import evaluate_sae, format_table, store_batches

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


from .demo_interp import stage_interp  # noqa: E402  (it reads this module's layer, prompt and helpers)

from .pipeline.finetune_stage import stage_finetune  # noqa: E402
from .pipeline.saev_stage import stage_saev  # noqa: E402

STAGES = {"world": stage_world, "zoo": stage_zoo, "harvest": stage_harvest, "sae": stage_sae, "interp": stage_interp,
          "saev": stage_saev, "finetune": stage_finetune}
# saev and finetune are opt-in (`run_demo(out, stages=(*DEFAULT_STAGES, "saev", "finetune"))`) until they are
# timed within the 10-minute budget on a quiet 2-core machine
DEFAULT_STAGES = ("world", "zoo", "harvest", "sae", "interp")


def run_demo(out: Path, stages: tuple[str, ...] = DEFAULT_STAGES) -> dict:
    """Run the demo stages into `out` (written atomically: a failed run leaves the previous report intact)."""
    t0 = time.time()
    with atomic_dir(out) as tmp:
        rep = Report(tmp)
        for name in stages:
            t = time.time()
            console.log(f"demo stage: {name}")
            STAGES[name](rep)
            rep.metrics[f"time.{name}_s"] = round(time.time() - t, 1)
        rep.metrics["time.total_s"] = round(time.time() - t0, 1)
        head = "# mmsae demo report\n\nEverything below was computed by `mmsae demo` on the embedded default " \
               "(no download), in " f"{rep.metrics['time.total_s']:.0f} s.\n"
        (tmp / "report.md").write_text(head + "\n" + "\n".join(rep.sections))
        write_json(tmp / "metrics.json", rep.metrics)
    return rep.metrics


def main(out: Path) -> None:
    metrics = run_demo(out)
    console.print(json.dumps({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, indent=1))
