"""The demo's interpretation stage: the Multimodal-SAE pipeline on the embedded world.

For an early, a middle and a late layer of the zoo subject: harvest, train a TopK SAE, index the features
over held-out scenes, explain a seeded random sample of image features with the zoo explainer served over
HTTP (a separate process, as vLLM would be), and score the explanations (IoU with the world's exact masks,
CLIP score, both against random baselines; detection on the middle layer). The middle layer's table scores
N_FEATURES features and gives 95 % bootstrap intervals over features; the oracle explainer (the best single
world concept per feature, `oracle.py`) scored on the same features says how close the explainer is to this
world's ceiling.

IoU has three random baselines: random images (the paper's code: the explanation and the feature's activation
region on random images of the data), random explanations (other features' explanations on the top images) and
random regions (as many random patches on the top images).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .layer import DEMO_LAYER, INDEX_DATA, LayerResult, LayerSettings, explainer_server, run_layer
from .report import fmt_ci, mean_ci, ratio_ci

INTERP_LAYERS = (1, 3, 5)  # early, middle, late blocks of the subject's 6
N_FEATURES = 150  # image features explained and scored on the demo layer (a seeded random sample)
N_FEATURES_OTHER = 24  # on the other layers (their row in the layer comparison only)
N_DETECTION = 24  # of those, scored for detection on the middle layer (each costs ~10 judge answers)
N_SHEETS = 3
BASELINES = ("iou_random_images", "iou_random_expl", "iou_random")
PER_FEATURE = ("iou", *BASELINES, "clip", "clip_random")


def _mean(summary: dict, metric: str, cls: str | None = None) -> float | None:
    stats = summary["metrics"] if cls is None else summary["per_class"].get(cls, {})
    s = stats.get(metric)
    return None if s is None else s["mean"]


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _ratio(num: float | None, den: float | None) -> str:
    return "-" if not num or not den else f"{num / den:.1f}x"


def per_feature(index_dir: Path, features: list[int]) -> dict[int, dict[str, float]]:
    """feature -> {metric: value} of the stored IoU / CLIP scores and their baselines."""
    from ..index import open_index
    from ..index.results import score_values

    con = open_index(index_dir)
    try:
        return score_values(con, PER_FEATURE, features)
    finally:
        con.close()


def intervals(values: dict[int, dict[str, float]], oracle_F: dict[int, float]) -> dict:
    """Means with 95 % bootstrap intervals over features: every metric, the model / baseline ratios (paired:
    one resample draws a feature's score and its baseline together) and model / oracle on the same features."""
    out: dict[str, tuple[float, tuple[float, float] | None, int]] = {}
    for m in PER_FEATURE:
        x = [v[m] for v in values.values() if m in v]
        if x:
            out[m] = (float(np.mean(x)), mean_ci(x), len(x))
    for b in BASELINES:
        pairs = [(v["iou"], v[b]) for v in values.values() if "iou" in v and b in v]
        if pairs and np.mean([p[1] for p in pairs]) > 0:
            a, d = zip(*pairs)
            out[f"iou/{b}"] = (float(np.mean(a) / np.mean(d)), ratio_ci(a, d), len(a))
    same = [(v["iou"], oracle_F[f]) for f, v in values.items() if "iou" in v and f in oracle_F]
    if same:
        a, o = zip(*same)
        out["oracle"] = (float(np.mean(o)), mean_ci(o), len(o))
        if np.mean(o) > 0:
            out["iou/oracle"] = (float(np.mean(a) / np.mean(o)), ratio_ci(a, o), len(a))
    return out


def feature_sheets(rep_out: Path, index_dir: Path, n: int) -> list[tuple[int, str, Path]]:
    """Contact sheets of the best-scoring explained features (by IoU)."""
    from ..index import feature_sheet_from_index, open_index
    from ..index.results import best_explained
    from ..viz import save_png

    con = open_index(index_dir)
    try:
        best = best_explained(con, "iou", n)
    finally:
        con.close()
    sheets = []
    for b in best:
        path = rep_out / f"feature-{b.feature}.png"
        save_png(feature_sheet_from_index(index_dir, b.feature, n=5), path)
        sheets.append((b.feature, b.explanation, path))
    return sheets


def stage_interp(rep) -> None:
    from .oracle import CUT, oracle_iou

    results: dict[int, LayerResult] = {}
    with explainer_server() as url:
        for layer in INTERP_LAYERS:
            main = layer == DEMO_LAYER
            settings = LayerSettings(n_features=N_FEATURES if main else N_FEATURES_OTHER,
                                     detection=N_DETECTION if main else 0)
            # the demo layer's SAE is the one the earlier stages trained and evaluated
            results[layer] = run_layer(rep.out, layer, url, "explainer", settings,
                                       sae_dir=rep.out / "sae" / "sae" if main else None)
    res = results[DEMO_LAYER]
    values = per_feature(res.index, res.features)
    orc = oracle_iou(res.index, res.features)
    oracle_F = {f: float(b) for f, b in zip(orc.features, orc.best_F)}
    ci = intervals(values, oracle_F)
    main = res.summary
    m = rep.metrics
    m["interp.iou.model"], m["interp.iou.random"] = _mean(main, "iou"), _mean(main, "iou_random_images")
    m["interp.iou.random_explanation"] = _mean(main, "iou_random_expl")
    m["interp.iou.random_region"] = _mean(main, "iou_random")
    m["interp.clip.model"], m["interp.clip.random"] = _mean(main, "clip"), _mean(main, "clip_random")
    m["interp.detection.balanced_accuracy"] = _mean(main, "detection_bacc")
    m["interp.explained"] = res.explain["explained"]
    m["interp.sampled"] = len(res.features)
    for key, name in (("iou/iou_random_expl", "iou.ratio_random_explanation"), ("oracle", "iou.oracle"),
                      ("iou/oracle", "iou.model_over_oracle")):
        if key in ci:
            m[f"interp.{name}"] = ci[key][0]
    for key, name in (("iou", "iou.model"), ("iou_random_expl", "iou.random_explanation"), ("clip", "clip.model"),
                      ("iou/iou_random_expl", "iou.ratio_random_explanation"), ("oracle", "iou.oracle"),
                      ("iou/oracle", "iou.model_over_oracle")):
        if key in ci and ci[key][1] is not None:
            m[f"interp.{name}_lo"], m[f"interp.{name}_hi"] = ci[key][1]
    summ = orc.summary(CUT)
    m["interp.oracle.explained"] = 0 if summ is None else summ["explained"]
    m["interp.oracle.iou"] = None if summ is None else summ["iou"]
    for layer, r in results.items():
        for metric in ("iou", *BASELINES, "clip", "clip_random"):
            m[f"interp.layers.{layer}.{metric}"] = _mean(r.summary, metric)
        m[f"interp.layers.{layer}.explained"] = r.explain["explained"]
        m[f"interp.layers.{layer}.uninterpretable"] = r.explain["uninterpretable"]
        m[f"interp.layers.{layer}.sampled"] = len(r.features)
    sheets = feature_sheets(rep.out, res.index, N_SHEETS)
    rep.add("Interpretation: features explained by a larger LMM and scored (Multimodal-SAE)",
            _report(res, results, ci, summ, sheets))


def _ci_cell(ci: dict, key: str, digits: int = 3, suffix: str = "") -> str:
    if key not in ci:
        return "-"
    value, lohi, _n = ci[key]
    return fmt_ci(value, lohi, digits, suffix)


def _report(res: LayerResult, results: dict[int, LayerResult], ci: dict, oracle_summary: dict | None,
            sheets: list) -> str:
    main = res.summary

    def row(label: str, cls: str | None, n: int) -> str:
        cells = " | ".join(_fmt(_mean(main, b, cls)) for b in BASELINES)
        return (f"| {label} | {n} | {cells} | {_fmt(_mean(main, 'iou', cls))} | "
                f"{_fmt(_mean(main, 'clip_random', cls), 1)} | {_fmt(_mean(main, 'clip', cls), 1)} |")

    rows = [row(cls, cls, main["per_class"][cls].get("iou", {}).get("n", 0)) for cls in main["per_class"] if cls != "none"]
    rows.append(row("**total**", None, main["metrics"].get("iou", {}).get("n", 0)))
    layer_rows = []
    for layer, r in results.items():
        s = r.summary
        iou = _mean(s, "iou")
        ratios = " | ".join(f"{_fmt(_mean(s, b))} ({_ratio(iou, _mean(s, b))})" for b in BASELINES)
        layer_rows.append(f"| {layer} | {r.explain['explained']} / {len(r.features)} | {_fmt(iou)} | {ratios} | "
                          f"{_fmt(_mean(s, 'clip'), 1)} | {_fmt(_mean(s, 'clip_random'), 1)} |")
    det = _mean(main, "detection_bacc")
    pics = "\n".join(f"Feature {f}, explained as \"{text}\" (original, heatmap, masked):\n\n![feature {f}]({p.name})\n"
                     for f, text, p in sheets)
    trials = main.get("trials", {})
    n_iou = ci.get("iou", (0, None, 0))[2]
    orc = ("no sampled feature passes the oracle's cut" if oracle_summary is None else
           f"at its cut (best IoU > 0.2) the oracle explains {oracle_summary['explained']} of the {len(res.features)} "
           f"sampled features, with mean IoU {oracle_summary['iou']:.3f}")
    return f"""
For layers {', '.join(map(str, INTERP_LAYERS))} (early, middle, late) a TopK SAE was trained as above; `mmsae index`
streamed {INDEX_DATA.split(':')[1]} held-out scenes through the subject and each SAE and kept every feature's top
images with their patch maps; {len(res.features)} image features of the middle layer and {N_FEATURES_OTHER} of each
other layer (firing mostly on image tokens, with at least 5 top images; a seeded random sample) were shown as the
paper's masked top-5 images to the zoo explainer, served over HTTP by `mmsae serve-explainer` (a separate process,
called through the OpenAI-compatible client), which answered with a concept or "Unable to interpret"; `mmsae score`
then scored each explanation. IoU: the world's exact mask of the concepts the explanation names against the
binarised activation region, averaged over the top images. Three random baselines
({trials.get('iou_random_expl', ['?'])[0]} trials each): *random images*, the paper's code's baseline (the
explanation and the feature's activation region on random images of the data instead of its top images); *random
explanation* (other features' explanations grounded on the same top images); *random region* (the explanation
against as many random patches of the top images; much harder on this world, where a scene covers most of an
image). CLIP: the zoo CLIP's image-text similarity x100 between the explanation and the top images; random: other
features' explanations on the same images.

The paper's table on the middle layer (block {DEMO_LAYER}), per concept class of the explanation:

| concept | n | IoU random images | IoU random explanation | IoU random region | IoU V-Interp | CLIP random | CLIP V-Interp |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

With 95 % bootstrap intervals over the {n_iou} explained features (2000 resamples of features):

| | value [95 % interval] |
|---|---|
| IoU, explainer | {_ci_cell(ci, 'iou')} |
| IoU, random explanation | {_ci_cell(ci, 'iou_random_expl')} |
| IoU, random images | {_ci_cell(ci, 'iou_random_images')} |
| IoU / random explanation | {_ci_cell(ci, 'iou/iou_random_expl', 2, 'x')} |
| IoU / random images | {_ci_cell(ci, 'iou/iou_random_images', 2, 'x')} |
| IoU, oracle explainer on the same features | {_ci_cell(ci, 'oracle')} |
| explainer / oracle | {_ci_cell(ci, 'iou/oracle', 2)} |
| CLIP, explainer | {_ci_cell(ci, 'clip', 1)} |
| CLIP, random explanation | {_ci_cell(ci, 'clip_random', 1)} |

The oracle explainer names, for each feature, the one world concept whose exact mask best overlaps its top-5
activation regions — no explainer has it, so it is this world's ceiling for a single-concept explanation under the
IoU protocol; {orc}.

Detection (delphi-style; the subject as judge decides from the explanation which of the top and non-activating
images show it): balanced accuracy {_fmt(det)} on up to {N_DETECTION} features.

Layer comparison (as found; each random baseline with IoU / baseline in brackets):

| layer | explained / sampled | IoU | random images | random explanation | random region | CLIP | CLIP random |
|---|---|---|---|---|---|---|---|
{chr(10).join(layer_rows)}

A closed world sets a floor under the random baselines that open-world data does not: 39 nameable concepts,
a handful of them in every scene, so a random explanation or a random image often names or shows the right
thing (the paper's random IoU is 0.005).

{pics}
"""
