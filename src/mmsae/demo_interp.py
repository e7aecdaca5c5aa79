"""The demo's interpretation stage: the Multimodal-SAE pipeline on the embedded world.

For an early, a middle and a late layer of the zoo subject: harvest, train a TopK SAE, index the features
over held-out scenes, explain a random sample of image features with the zoo explainer served over HTTP by
`mmsae serve-explainer` (a separate process, as vLLM would be), and score the explanations (IoU with the
world's exact masks, CLIP score, both against random baselines; detection on the middle layer).

IoU has three random baselines: random images (the paper's code: the explanation and the feature's activation
region on random images of the data), random explanations (other features' explanations on the top images) and
random regions (as many random patches on the top images).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

INTERP_LAYERS = (1, 3, 5)  # early, middle, late blocks of the subject's 6
INDEX_DATA = "world:n=300,seed=9"  # held out from the SAE's training scenes (seeds 7 and 8)
N_FEATURES = 48  # image features explained per layer (a seeded random sample, as the paper samples)
N_DETECTION = 24  # of those, scored for detection on the middle layer (each costs ~10 judge answers)
N_SHEETS = 3


@contextmanager
def explainer_server(timeout_s: float = 300.0):
    """`mmsae serve-explainer --port 0` in a child process; yields its base URL, stops it afterwards."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "mmsae", "serve-explainer", "--port", "0", "--name", "explainer"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    try:
        url, deadline = None, time.time() + timeout_s
        while url is None:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                raise RuntimeError(f"serve-explainer exited with code {proc.returncode} before serving")
            if m := re.search(r"on (http://\S+/v1)", line):
                url = m.group(1)
            if time.time() > deadline:
                raise TimeoutError("serve-explainer did not start in time")
        httpx.get(f"{url}/models", timeout=30).raise_for_status()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def image_features(index_dir: Path) -> list[int]:
    """The index's image features: firing mostly on image tokens, with >= 5 top images; by id."""
    from .index import open_index, top_features

    con = open_index(index_dir)
    try:
        return [f.feature for f in top_features(con, min_examples=5, min_image_share=0.5, order_by="feature")]
    finally:
        con.close()


def pick_features(index_dir: Path, n: int, seed: int = 0) -> list[int]:
    """A seeded random sample of the index's image features."""
    pool = image_features(index_dir)
    rng = np.random.default_rng(seed)
    return sorted(int(f) for f in rng.choice(pool, size=min(n, len(pool)), replace=False))


def interpret_layer(out: Path, sae_dir: Path, layer: int, url: str, prompt: str, detection: bool) -> dict:
    """Index, explain and score one layer's SAE; returns the score summary plus explanation counts."""
    from .explain.run import ExplainConfig, run_explain
    from .index import IndexConfig, build_index
    from .score.run import ScoreConfig, run_score

    index_dir = out / f"index-layer{layer}"
    build_index(IndexConfig(out=str(index_dir), sae=str(sae_dir), data=INDEX_DATA, prompt=prompt, progress=False))
    features = pick_features(index_dir, N_FEATURES, seed=layer)
    explained = run_explain(ExplainConfig(index=index_dir, features=features, backend="http", base_url=url,
                                          model="explainer", progress=False))
    summary = run_score(ScoreConfig(index=index_dir, features=features, progress=False))
    if detection:  # a separate, smaller run: each feature costs about ten judge answers
        det = run_score(ScoreConfig(index=index_dir, features=features, limit=N_DETECTION, iou=False, clip=False,
                                    detection=True, progress=False))
        summary["metrics"]["detection_bacc"] = det["metrics"].get("detection_bacc")
    summary["explain"] = {k: explained.get(k) for k in ("explained", "uninterpretable", "failed")}
    summary["sampled_features"] = len(features)
    return summary


def feature_sheets(rep_out: Path, index_dir: Path, n: int) -> list[tuple[int, str, Path]]:
    """Contact sheets of the best-scoring explained features (by IoU)."""
    from .index import open_index
    from .viz import feature_sheet_from_index, save_png

    con = open_index(index_dir)
    try:
        rows = con.execute("SELECT e.feature, e.explanation, s.value FROM explanations e JOIN scores s USING (feature) "
                           "WHERE e.status = 'explained' AND s.metric = 'iou' ORDER BY s.value DESC, e.feature LIMIT ?",
                           [n]).fetchall()
    finally:
        con.close()
    sheets = []
    for f, text, _ in rows:
        path = rep_out / f"feature-{f}.png"
        save_png(feature_sheet_from_index(index_dir, f, n=5), path)
        sheets.append((int(f), text, path))
    return sheets


def _mean(summary: dict, metric: str, cls: str | None = None) -> float | None:
    stats = summary["metrics"] if cls is None else summary["per_class"].get(cls, {})
    s = stats.get(metric)
    return None if s is None else s["mean"]


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def stage_interp(rep) -> None:
    from .demo import DEMO_LAYER, DEMO_PROMPT, harvest_layer, train_layer

    summaries: dict[int, dict] = {}
    with explainer_server() as url:
        for layer in INTERP_LAYERS:
            if layer == DEMO_LAYER:  # the SAE of the previous stages
                sae_dir = rep.out / "sae" / "sae"
            else:
                store = harvest_layer(rep.out / f"store-layer{layer}", layer)
                train_layer(store, rep.out / f"sae-layer{layer}", layer)
                sae_dir = rep.out / f"sae-layer{layer}" / "sae"
            summaries[layer] = interpret_layer(rep.out, sae_dir, layer, url, DEMO_PROMPT, detection=layer == DEMO_LAYER)
    main = summaries[DEMO_LAYER]
    m = rep.metrics
    m["interp.iou.model"], m["interp.iou.random"] = _mean(main, "iou"), _mean(main, "iou_random_images")
    m["interp.iou.random_explanation"] = _mean(main, "iou_random_expl")
    m["interp.iou.random_region"] = _mean(main, "iou_random")
    m["interp.clip.model"], m["interp.clip.random"] = _mean(main, "clip"), _mean(main, "clip_random")
    m["interp.detection.balanced_accuracy"] = _mean(main, "detection_bacc")
    m["interp.explained"] = main["explain"]["explained"]
    m["interp.sampled"] = main["sampled_features"]
    for layer, s in summaries.items():
        for metric in ("iou", "iou_random_images", "iou_random_expl", "iou_random", "clip", "clip_random"):
            m[f"interp.layers.{layer}.{metric}"] = _mean(s, metric)
        m[f"interp.layers.{layer}.explained"] = s["explain"]["explained"]
        m[f"interp.layers.{layer}.uninterpretable"] = s["explain"]["uninterpretable"]
    sheets = feature_sheets(rep.out, rep.out / f"index-layer{DEMO_LAYER}", N_SHEETS)
    rep.add("Interpretation: features explained by a larger LMM and scored (Multimodal-SAE)", _report(main, summaries, sheets))


def _ratio(num: float | None, den: float | None) -> str:
    return "-" if not num or not den else f"{num / den:.1f}x"


def _report(main: dict, summaries: dict[int, dict], sheets: list) -> str:
    from .demo import DEMO_LAYER

    baselines = ("iou_random_images", "iou_random_expl", "iou_random")

    def row(label: str, cls: str | None, n: int) -> str:
        cells = " | ".join(_fmt(_mean(main, b, cls)) for b in baselines)
        return (f"| {label} | {n} | {cells} | {_fmt(_mean(main, 'iou', cls))} | "
                f"{_fmt(_mean(main, 'clip_random', cls), 1)} | {_fmt(_mean(main, 'clip', cls), 1)} |")

    rows = [row(cls, cls, main["per_class"][cls].get("iou", {}).get("n", 0)) for cls in main["per_class"] if cls != "none"]
    rows.append(row("**total**", None, main["metrics"].get("iou", {}).get("n", 0)))
    layer_rows = []
    for layer, s in summaries.items():
        iou = _mean(s, "iou")
        ratios = " | ".join(f"{_fmt(_mean(s, b))} ({_ratio(iou, _mean(s, b))})" for b in baselines)
        layer_rows.append(f"| {layer} | {s['explain']['explained']} / {s['sampled_features']} | {_fmt(iou)} | {ratios} | "
                          f"{_fmt(_mean(s, 'clip'), 1)} | {_fmt(_mean(s, 'clip_random'), 1)} |")
    det = _mean(main, "detection_bacc")
    pics = "\n".join(f"Feature {f}, explained as \"{text}\" (original, heatmap, masked):\n\n![feature {f}]({p.name})\n"
                     for f, text, p in sheets)
    trials = main.get("trials", {})
    return f"""
For layers {', '.join(map(str, INTERP_LAYERS))} (early, middle, late) a TopK SAE was trained as above; `mmsae index`
streamed {INDEX_DATA.split(':')[1]} held-out scenes through the subject and each SAE and kept every feature's top
images with their patch maps; {N_FEATURES} image features per layer (firing mostly on image tokens, with at least
5 top images; a seeded random sample) were shown as the paper's masked top-5 images to the zoo explainer, served
over HTTP by `mmsae serve-explainer` (a separate process, called through the OpenAI-compatible client), which
answered with a concept or "Unable to interpret"; `mmsae score` then scored each explanation. IoU: the world's exact
mask of the concepts the explanation names against the binarised activation region, averaged over the top images.
Three random baselines ({trials.get('iou_random_expl', ['?'])[0]} trials each): *random images*, the paper's code's
baseline (the explanation and the feature's activation region on random images of the data instead of its top
images); *random explanation* (other features' explanations grounded on the same top images); *random region*
(the explanation against as many random patches of the top images; much harder on this world, where a scene covers
most of an image). CLIP: the zoo CLIP's image-text similarity x100 between the explanation and the top images;
random: other features' explanations on the same images.

The paper's table on the middle layer (block {DEMO_LAYER}), per concept class of the explanation:

| concept | n | IoU random images | IoU random explanation | IoU random region | IoU V-Interp | CLIP random | CLIP V-Interp |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Detection (delphi-style; the subject as judge decides from the explanation which of the top and non-activating
images show it): balanced accuracy {_fmt(det)} on up to {N_DETECTION} features.

Layer comparison (as found; each random baseline with IoU / baseline in brackets):

| layer | explained / sampled | IoU | random images | random explanation | random region | CLIP | CLIP random |
|---|---|---|---|---|---|---|---|
{chr(10).join(layer_rows)}

A closed world sets a floor under the random baselines that open-world data does not: 39 nameable concepts,
a handful of them in every scene, so a random explanation or a random image often names or shows the right
thing (the paper's random IoU is 0.005; see BENCHMARKS.md, "Interpretability ceiling", for the ratio an oracle
explainer reaches on these SAEs).

{pics}
"""
