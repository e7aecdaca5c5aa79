"""Demo stage: the hallucination study (`pipeline.hallucination`, `pipeline.steer_study`) on the demo SAE.

Reads `sae/sae/` under rep.out (the 'sae' stage's layer-3 SAE); writes steer_attribution.png and the metrics
steer.* and attribute.* (see `metric_keys`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..defaults import default_model
from .hallucination import StudyResult, StudySettings
from .layer import DEMO_LAYER


def metric_keys(r: StudyResult) -> dict[str, float]:
    q = r.rates
    return {
        "steer.fixed_rate": q["fixed"],
        "steer.accuracy_drop": q["vqa_accuracy"] - q["vqa_accuracy_steered"],
        "steer.vqa_accuracy": q["vqa_accuracy"],
        "steer.vqa_accuracy_steered": q["vqa_accuracy_steered"],
        "steer.slice_correct_kept": q["slice_correct_kept"],
        "steer.control_yes_kept": q["control_yes_kept"],
        "steer.control_yes_unsteered": q["control_yes_unsteered"],
        "steer.random_fixed_rate": q["random_fixed"],
        "steer.diffmeans_fixed_rate": q["diffmeans_fixed"],
        "steer.prompting_fixed_rate": q["prompting_fixed"],
        "steer.cases_heldout": q["heldout_hallucinated"],
        "steer.hallucination_rate": r.hallucination_rate,
        "steer.features": len(r.choice.features),
        "attribute.text_share_hallucinated": r.text_share_hallucinated,
        "attribute.text_share_correct": r.text_share_correct,
        "attribute.image_share_hallucinated": r.image_share_hallucinated,
        "attribute.image_share_correct": r.image_share_correct,
        "attribute.error_share": r.error_share,
        "attribute.exact_pearson_top50": r.exact_pearson_top50,
        "attribute.exact_spearman_top50": r.exact_spearman_top50,
    }


def plot_study(r: StudyResult, path: Path) -> Path:
    """Left: share of |attribution| by modality, hallucinated vs correct cases. Middle: one hallucinated case's
    image-token attribution on its image. Right: held-out fixed rate per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    names = ("text", "image", "error")
    hall = [r.text_share_hallucinated, r.image_share_hallucinated]
    right = [r.text_share_correct, r.image_share_correct]
    x = np.arange(2)
    axes[0].bar(x - 0.2, hall, 0.4, label="hallucinated", color="#c44")
    axes[0].bar(x + 0.2, right, 0.4, label="correct", color="#48c")
    axes[0].set_xticks(x, names[:2])
    axes[0].set_ylabel("share of |attribution|")
    axes[0].set_title("what drives yes − no")
    axes[0].legend()
    ex = r.example
    if ex.get("heatmap") is not None:
        axes[1].imshow(ex["heatmap"])
        axes[1].set_title(f"one hallucination ({ex['colour']} star):\nimage-token attribution")
    axes[1].axis("off")
    q = r.rates
    methods = {"SAE steering": q["fixed"], "random features": q["random_fixed"], "diff. of means": q["diffmeans_fixed"],
               "prompting": q["prompting_fixed"]}
    axes[2].barh(list(methods), list(methods.values()), color=["#2a2", "#999", "#a7a", "#da4"])
    axes[2].set_xlim(0, 1)
    axes[2].invert_yaxis()
    axes[2].set_title(f"held-out hallucinations fixed (n = {q['heldout_hallucinated']})")
    colours = {"damp": "#2a2", "boost_image": "#48c", "diffmeans": "#a7a"}
    for kind, colour in colours.items():
        cs = [c for c in r.candidates if c.kind == kind]
        axes[3].scatter([100 * c.calib_lost for c in cs], [100 * c.calib_fixed for c in cs], s=18, c=colour, label=kind)
    axes[3].scatter([100 * r.choice.calib_lost], [100 * r.choice.calib_fixed], s=120, facecolors="none",
                    edgecolors="k", label="chosen")
    axes[3].set_xlabel("accuracy lost on controls (points)")
    axes[3].set_ylabel("hallucinations fixed (%)")
    axes[3].set_title("calibration: every candidate")
    axes[3].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pct(v: float) -> str:
    return "n/a" if v != v else f"{100 * v:.0f} %"


def body(r: StudyResult, png: str) -> str:
    q, s = r.rates, r.settings
    drop = 100 * (q["vqa_accuracy"] - q["vqa_accuracy_steered"])
    best = max(("SAE steering", q["fixed"]), ("difference of means", q["diffmeans_fixed"]), ("prompting", q["prompting_fixed"]),
               key=lambda kv: -1 if kv[1] != kv[1] else kv[1])
    top = ", ".join(f"{f} ({a:+.2f})" for f, a in r.example.get("top", []))
    goal = q["fixed"] >= 0.8 and drop < 2.0
    strong = min((c for c in r.candidates if c.kind != "diffmeans" and c.calib_fixed >= 0.8),
                 key=lambda c: c.calib_lost, default=None)
    frontier = ("no SAE candidate fixes 80 % of the calibration cases" if strong is None else
                f"the cheapest SAE candidate fixing ≥ 80 % on calibration ({strong.describe()}) loses "
                f"{100 * strong.calib_lost:.1f} points on the calibration controls")
    verdict = (f"The goal (≥ 80 % fixed for < 2 points of VQA accuracy) is **{'met' if goal else 'not met'}** here; "
               f"{frontier}.")
    cands = "\n".join(f"| {c.describe()} | {_pct(c.calib_fixed)} | {100 * c.calib_lost:.1f} pts | {c.objective:.3f} |"
                      for c in sorted(r.candidates, key=lambda c: -c.objective)[:8])
    return f"""
The zoo subject's prior-driven hallucination, the paper's "Bolivia" case in this world: stars are yellow in 95 % of
training scenes, so asked "is the star yellow ?" about a star of another colour it answers "yes" in
{_pct(r.hallucination_rate)} of {r.n_cases} fresh cases (world seed {s.seed}). The cases were split in a
calibration and a held-out half; everything below the attribution was chosen on the calibration half only.

**Attribution** (`mmsae.attribute`, one forward + one backward pass per batch, d = logit(yes) − logit(no) at the
answer position, attribution = −z·∂d/∂z, error term included): the text tokens carry
{_pct(r.text_share_hallucinated)} of |attribution| in hallucinated cases and {_pct(r.text_share_correct)} in
correct ones (image tokens {_pct(r.image_share_hallucinated)} vs {_pct(r.image_share_correct)}; the SAE error term
{_pct(r.error_share)} overall). The linear estimate against re-running with each top-50 feature zeroed, on
{s.exact_cases} hallucinated cases: Pearson {r.exact_pearson_top50:.2f}, Spearman {r.exact_spearman_top50:.2f}.
Features of the first case most pushing "yes" (attribution): {top}.

![attribution and steering]({png})

**Steering** (`mmsae.steer`, error term kept). Chosen on the calibration half (objective = fixed rate −
{s.cost_weight:g} × accuracy lost on correct slice cases, on prior-coloured control stars and on VQA first
tokens; candidates: the features pushing "yes" zeroed or reversed, image features pushing "no" boosted): **{r.choice.describe()}**.

| held out | value |
|---|---|
| hallucinations fixed (answer becomes "no") | **{_pct(q['fixed'])}** of {q['heldout_hallucinated']} |
| same number of random features (unit-norm decoder rows), same intervention | {_pct(q['random_fixed'])} (mean of {s.random_draws} draws) |
| difference-of-means vector (correct − hallucinated residual, best multiple on calibration) | {_pct(q['diffmeans_fixed'])} |
| prompting: ask "what colour is the star ?", answer yes iff yellow | {_pct(q['prompting_fixed'])} |
| prior-coloured control stars still answered "yes" (the steering must not just teach "no") | {_pct(q['control_yes_kept'])} of {q['heldout_control']} (unsteered {_pct(q['control_yes_unsteered'])}) |
| correctly answered slice cases still correct under the steering | {_pct(q['slice_correct_kept'])} of {q['heldout_correct']} (all answered "no" unsteered) |
| ordinary VQA accuracy, all question types, greedy generation | {100 * q['vqa_accuracy']:.1f} % → {100 * q['vqa_accuracy_steered']:.1f} % ({drop:+.1f} points lost; {q['vqa_questions']} questions) |

{verdict}
Best at fixing the held-out hallucinations here: **{best[0]}** ({_pct(best[1])}). The prompting baseline only
applies to this question template; the steering is applied to every input, which is what its VQA cost measures.

Top calibration candidates:

| candidate | calib. fixed | accuracy lost | objective |
|---|---|---|---|
{cands}
"""


def stage_steer(rep, settings: StudySettings | None = None) -> None:
    sae_dir = Path(rep.out) / "sae" / "sae"
    if not sae_dir.exists():
        raise FileNotFoundError(f"the steer stage steers with the demo SAE at {sae_dir}: run the 'sae' stage before it")
    from rich.console import Console

    from ..models import load_adapter
    from ..sae.formats import load_any
    from .steer_study import run_study

    console = Console(stderr=True)
    adapter, sae = load_adapter(default_model()), load_any(sae_dir)
    result = run_study(adapter, sae, DEMO_LAYER, settings, progress=lambda m: console.log(f"steer: {m}"))
    png = plot_study(result, Path(rep.out) / "steer_attribution.png")
    rep.metrics.update(metric_keys(result))
    rep.add("Attribution and steering: a measured cure for a hallucination", body(result, png.name))
