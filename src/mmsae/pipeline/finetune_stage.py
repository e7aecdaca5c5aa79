"""Demo stage: SAE-V's data filtering in miniature (a reduced run of benchmarks/finetune_filter.py).

Scores the records with the 'saev' stage's SAE-V (`saev/saev_relu/` under rep.out) by `l0`, `cooccur` and `cosine`
(or, without that stage, the demo's TopK SAE at `sae/sae/` by `cooccur`), and by the baselines `random` and IFD. Writes rep.out/finetune/ and the metrics
`finetune.<selection>.<keep>.accuracy` (+ `_sd` over seeds) and `filter.<method>.auroc`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..defaults import default_model
from ..finetune.experiment import ExperimentConfig, ifd_method, plot, prepare, random_scores, run_experiment, summarise

# sized for the demo's budget on a quiet 2-core machine; the benchmark runs the full design
STAGE_CFG = ExperimentConfig(n_train=96, n_eval=48, keeps=(0.5,), seeds=(0, 1), budgets=("steps",), epochs=4.0,
                             batch=16, lr=1e-3)
BASES = {"projector": "the zoo subject with its projector re-initialised: its language model knows the answer "
                        "words but nothing of what image tokens mean; 0 % held-out VQA",
         "decoder": "the subject's vision tower, a fresh projector and a small random language model"}


def _sae_scores(rep, prep: dict) -> tuple[dict[str, dict[str, float]], str]:
    """Record scores by the SAE-V of the 'saev' stage when it ran (ReLU+L1, as the paper's: l0, cooccur, and
    cosine from its index's cross-modal weights), else by the demo's TopK SAE (cooccur only: a TopK SAE's
    per-token L0 is k everywhere)."""
    from ..data import open_source
    from ..models import load_adapter
    from ..sae.formats import load_any
    from ..saev.scoring import score_records
    from .saev_stage import SAEV

    out = Path(rep.out)
    saev_dir, demo_dir = out / "saev" / SAEV, out / "sae" / "sae"
    weights, index = None, out / "saev" / "index-saev"
    if saev_dir.exists():
        sae, methods = load_any(saev_dir), ["l0", "cooccur"]
        note = "SAE scores from the 'saev' stage's SAE-V (ReLU+L1) on the zoo subject"
        if (index / "index.duckdb").exists():
            from ..index import open_index
            from ..index.crossmodal import crossmodal_weights

            con = open_index(index)
            try:
                weights = crossmodal_weights(con, sae.cfg.n_latents)
            finally:
                con.close()
            if np.isfinite(weights).any():  # with no weighted feature every record would score 0
                methods.append("cosine")
    elif demo_dir.exists():
        sae, methods = load_any(demo_dir), ["cooccur"]
        note = "SAE scores from the demo's TopK SAE on the zoo subject (cooccur; run the 'saev' stage for l0 and cosine)"
    else:
        raise FileNotFoundError(f"the finetune stage scores records with the demo SAE at {demo_dir} or the SAE-V at "
                                f"{saev_dir}: run the 'sae' stage (or 'saev') before it")
    src = open_source(f"jsonl:{prep['data_dir'] / 'instruct.jsonl'}")
    records = [src.record(i) for i in range(len(src))]
    adapter = load_adapter(default_model())
    scores = {m: score_records(adapter, sae, records, m, crossmodal=weights if m == "cosine" else None)
              for m in methods}
    return scores, f"{note} ({', '.join(methods)})"


def stage_finetune(rep) -> None:
    cfg = STAGE_CFG
    out = Path(rep.out) / "finetune"
    prep = prepare(out, cfg, default_model())
    scores = {"random": random_scores(prep["ids"], cfg.seed + 5), "ifd": ifd_method(prep, cfg, out)}
    sae, sae_note = _sae_scores(rep, prep)
    scores.update(sae)
    result = run_experiment(out, cfg, default_model(), scores)
    png = plot(result["rows"], out / "accuracy_vs_kept.png")
    summ = summarise(result["rows"])
    for (sel, keep, _budget), (mean, sd, _n) in summ.items():
        rep.metrics[f"finetune.{sel}.{round(keep, 2):g}.accuracy"] = mean
        rep.metrics[f"finetune.{sel}.{round(keep, 2):g}.accuracy_sd"] = sd
    for m, row in result["auroc"].items():
        rep.metrics[f"filter.{m}.auroc"] = row["all"]
    rep.add("Fine-tuning on filtered data (SAE-V, reduced)", _body(result, summ, cfg, png, sae_note, rep.out))


def _body(result: dict, summ: dict, cfg: ExperimentConfig, png: Path, sae_note: str, root) -> str:
    rows = ["| selection | kept | accuracy (mean ± sd over seeds) |", "|---|---|---|"]
    rows += [f"| {s} | {k:.2f} | {m:.3f} ± {sd:.3f} ({n}) |" for (s, k, _b), (m, sd, n) in sorted(summ.items())]
    kinds = list(next(iter(result["auroc"].values())).keys())
    rows += ["", "AUROC (clean vs corrupted; 0.5 = chance), overall and per corruption kind:", "",
             "| score | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
    rows += [f"| {m} | " + " | ".join("—" if math.isnan(v) else f"{v:.2f}" for v in r.values()) + " |"
             for m, r in result["auroc"].items()]
    verdict = _verdict(summ)
    rel = Path(png).relative_to(root) if Path(png).is_relative_to(root) else png
    return "\n".join([
        f"A base that has not learnt the world's VQA ({BASES[cfg.base]}) is fine-tuned on {result['records']} world "
        f"instruction records, {result['corrupted']} of them corrupted (another scene's image, a wrong value, "
        f"noise or blank image, near-duplicate, empty or truncated answer; labels kept apart). {sae_note}. "
        f"Every arm gets the full-data run's steps; {len(cfg.seeds)} seeds; accuracy is exact match on "
        f"{cfg.n_eval} held-out clean questions.", "", *rows, "", f"![accuracy vs kept fraction]({rel})", "",
        f"Honestly: this is a reduced run ({cfg.n_train} records, a few dozen steps), so the projector is only "
        f"partly re-aligned: read every difference against the seed spread. {verdict} "
        f"The AUROCs say which corruptions each score sees. "
        f"`benchmarks/finetune_filter.py` runs the full design (20/50/70 %, equal steps and epochs, 3 seeds)."])


def _verdict(summ: dict) -> str:
    """The paper's two claims read off this run's numbers, with the seed spread as the yardstick."""
    def get(sel: str) -> tuple[float, float] | None:
        hit = [(m, sd) for (s, k, b), (m, sd, _) in summ.items() if s == sel and (sel == "all" or abs(k - 0.5) < 1e-9)]
        return hit[0] if hit else None

    full, rand = get("all"), get("random")
    out = []
    for sel in sorted({s for (s, _, _) in summ} - {"all", "clean", "random"}):
        mine = get(sel)
        if mine is None or full is None or rand is None:
            continue
        noise = 2 * max(mine[1], rand[1], full[1])
        vs_full = "reaches or beats" if mine[0] >= full[0] else "falls short of"
        vs_rand = ("beats random-50 % beyond seed noise" if mine[0] - rand[0] > noise and noise > 0 else
                   "does not beat random-50 % beyond seed noise" if noise > 0 else
                   f"{'beats' if mine[0] > rand[0] else 'does not beat'} random-50 % with seeds that agree exactly "
                   "(constant answers: no seed noise to measure against)")
        out.append(f"{sel} top-50 % ({mine[0]:.3f}) {vs_full} all data ({full[0]:.3f}) and {vs_rand} "
                   f"({rand[0]:.3f}).")
    return " ".join(out) or "No score besides random was available to compare."
