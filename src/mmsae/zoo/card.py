"""Model cards: what each zoo model is, how it was trained, and its measured numbers."""

from __future__ import annotations

import json
from pathlib import Path

from ..io import write_atomic

ABOUT = {
    "subject": "A small LLaVA-1.5-architecture LMM (CLIP ViT tower, 64x64 images, 8-pixel patches -> 64 image "
    "tokens; MLP projector; 6-layer Llama decoder, width 128) trained from scratch on the embedded world. "
    "Its residual stream is what mmsae's SAEs study. The world's prior-bias slice (stars are yellow 95 % of the "
    "time) gives it a language prior that can override what it sees.",
    "explainer": "A larger LLaVA-architecture LMM (CLIP tower with 16-pixel patches so five images fit in a short "
    "sequence; 6-layer Llama decoder, width 192) that receives 1-5 images in which only some 8-pixel patches are "
    "visible (the rest black, as in Multimodal-SAE) and answers with the concept the visible regions share, or "
    "'unable to interpret'.",
    "clip": "A CLIP dual encoder (HF CLIPModel) trained contrastively on world images and captions with dropped "
    "attributes, so single concept words embed well; used for the CLIP score of explanations.",
}

HOW = {
    "subject": "`mmsae zoo eval` renders held-out scenes from a world seed never used in training and asks every "
    "question type through `AutoProcessor` + `generate` (greedy). `vqa_accuracy` is exact match over colour, shape "
    "and texture questions whose target is not the prior-bias kind (stars). `prior_override_rate`: on scenes whose "
    "only star is not yellow, the share of 'is the star yellow ?' answered 'yes' (the yes/no form of the paper's "
    "hallucination case); `prior_colour_override_rate`: the share of 'what colour is the star ?' answered "
    "'yellow' on the same scenes.",
    "explainer": "Held-out sets of five images forced to contain one concept of the paper's six classes, masked "
    "to the patches an ideal feature would fire on (with 8 % of patches dropped or spuriously added), plus 20 % "
    "sets of random patch blobs that share no concept; exact match of the generated answer.",
    "clip": "Held-out single-object scenes; for each of the paper's six concept classes, the class's concept words "
    "are embedded as texts and the image's top-1 text must be a concept present in the image; `top1` is the mean "
    "over the classes.",
}


def write_cards(root: Path, metrics: dict) -> None:
    for name in ABOUT:
        own = {k.split(".", 1)[1]: v for k, v in metrics.items() if k.startswith(name + ".")}
        timings = root / name / "timings.json"
        lines = [
            f"# mmsae zoo: {name}", "", ABOUT[name], "",
            "Load offline: `AutoModelForImageTextToText.from_pretrained(path)` (or `CLIPModel`) and "
            "`AutoProcessor.from_pretrained(path)` with `HF_HUB_OFFLINE=1`.", "",
            "## Measured", "", "```json", json.dumps(own, indent=2, sort_keys=True), "```", "",
            "## How it was measured", "", HOW[name], "", "Command: `mmsae zoo eval --json` (eval settings: "
            f"`{json.dumps(metrics.get('eval_config', {}))}`).", "",
            "## Training", "", "`mmsae zoo train` (seeded, CPU). See BENCHMARKS.md for the wall time and machine.",
        ]
        if timings.exists():
            lines += ["", "Stage wall times (s):", "", "```json", timings.read_text().strip(), "```"]
        write_atomic(root / name / "README.md", "\n".join(lines) + "\n")
