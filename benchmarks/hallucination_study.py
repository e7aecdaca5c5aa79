"""The demo's hallucination study (mmsae.pipeline.steer_study.run_study) at other seeds and sizes, so that the
demo's single run can be read against its spread: each seed draws fresh slice cases, controls and VQA scenes,
chooses the steering on its own calibration half and reports its own held-out rates.

Needs the demo's layer-3 SAE (`mmsae demo --out DIR --stages world,zoo,harvest,sae` writes DIR/sae/sae).
One JSON object on stdout (flat keys per seed and their mean / min), also written to --out.

    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/hallucination_study.py --sae DIR/sae/sae \\
        [--seeds 2026,7,11] [--cases 400] [--out study.json]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

LAYER = 3  # the demo's layer (mmsae.pipeline.layer.DEMO_LAYER)
KEYS = ("fixed", "random_fixed", "diffmeans_fixed", "prompting_fixed", "control_yes_kept", "slice_correct_kept")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sae", required=True, help="the demo SAE directory (DIR/sae/sae)")
    ap.add_argument("--seeds", default="2026,7,11", help="comma list of world seeds, one study each")
    ap.add_argument("--cases", type=int, default=400, help="slice cases per study")
    ap.add_argument("--out", default=None, help="JSON file to write as well")
    args = ap.parse_args(argv)
    if not Path(args.sae).exists():
        raise SystemExit(f"--sae {args.sae} not found: run `mmsae demo --stages world,zoo,harvest,sae` first")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not seeds:
        raise SystemExit(f"--seeds must name at least one seed, got {args.seeds!r}")

    from mmsae.defaults import default_model
    from mmsae.models import load_adapter
    from mmsae.pipeline.hallucination import StudySettings
    from mmsae.pipeline.steer_study import run_study
    from mmsae.sae.formats import load_any

    adapter, sae = load_adapter(default_model()), load_any(args.sae)
    out: dict = {"layer": LAYER, "cases": args.cases, "seeds": seeds}
    for seed in seeds:
        t0 = time.perf_counter()
        r = run_study(adapter, sae, LAYER, replace(StudySettings(), seed=seed, n_cases=args.cases))
        q = r.rates
        for k in KEYS:
            out[f"seed{seed}.{k}"] = q[k]
        out[f"seed{seed}.accuracy_drop"] = q["vqa_accuracy"] - q["vqa_accuracy_steered"]
        out[f"seed{seed}.hallucination_rate"] = r.hallucination_rate
        out[f"seed{seed}.heldout_hallucinated"] = q["heldout_hallucinated"]
        out[f"seed{seed}.choice"] = r.choice.describe()
        out[f"seed{seed}.text_share_hallucinated"] = r.text_share_hallucinated
        out[f"seed{seed}.text_share_correct"] = r.text_share_correct
        out[f"seed{seed}.exact_pearson_top50"] = r.exact_pearson_top50
        out[f"seed{seed}.seconds"] = round(time.perf_counter() - t0, 1)
    for k in (*KEYS, "accuracy_drop"):
        vals = np.array([out[f"seed{s}.{k}"] for s in seeds], float)
        out[f"mean.{k}"], out[f"min.{k}"], out[f"max.{k}"] = float(vals.mean()), float(vals.min()), float(vals.max())
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return out


if __name__ == "__main__":
    main()
