"""SAE-V's data-filtering claim on the embedded world, with ground truth (issue 14).

Base: the zoo subject with its projector re-initialised (--base projector: 0 % held-out VQA; the language
model knows the answer words, not what image tokens mean), or --base decoder (the subject's vision tower + a
fresh projector and small random language model). Data: a world instruction set with --fraction corrupted (labels.json, never read by a
scorer). Scores: random, IFD (Cherry, from a briefly warmed-up base) and, when `mmsae.saev` and an SAE are
available, l0 / cooccur / cosine / clip through `score_records` on the scorer model (default: the zoo
subject). Fine-tunes on all, top 20/50/70 % per score, clean only; equal steps and equal epochs; seeds.

    python benchmarks/finetune_filter.py --out /tmp/ff --n-train 2000 --n-eval 400 --seeds 0 1 2 \
        --sae OUT/sae/sae --methods random ifd l0 cooccur clip

Run it only at a tiny size on a shared machine (--tiny) to check it works; never read timings off it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from mmsae.data import open_source
from mmsae.defaults import default_model
from mmsae.finetune.experiment import ExperimentConfig, ifd_method, plot, prepare, random_scores, run_experiment, summarise

SAE_METHODS = ("l0", "cooccur", "cosine", "clip")


def sae_scores(method: str, data_dir: Path, scorer: str, sae_dir: str, crossmodal: str | None) -> dict[str, float]:
    """`mmsae.saev`'s score of every record."""
    from mmsae.saev.scoring import score_records
    from mmsae.models import load_adapter
    from mmsae.sae.formats import load_any

    src = open_source(f"jsonl:{data_dir / 'instruct.jsonl'}")
    records = [src.record(i) for i in range(len(src))]
    weights = None
    if crossmodal:
        weights = {int(k): float(v) for k, v in json.loads(Path(crossmodal).read_text()).items()}
    return score_records(load_adapter(scorer), load_any(Path(sae_dir)), records, method, crossmodal=weights)


def all_scores(out: Path, cfg: ExperimentConfig, args) -> dict[str, dict[str, float]]:
    prep = prepare(out, cfg, args.subject)
    scores: dict[str, dict[str, float]] = {}
    for m in args.methods:
        cache = out / "scores" / f"{m}.json"
        if cache.exists():
            scores[m] = json.loads(cache.read_text())
            continue
        if m == "random":
            scores[m] = random_scores(prep["ids"], cfg.seed + 5)
        elif m == "ifd":
            scores[m] = ifd_method(prep, cfg, out)
        elif m in SAE_METHODS:
            if not args.sae:
                print(f"skip {m}: no --sae given", file=sys.stderr)
                continue
            try:
                scores[m] = sae_scores(m, prep["data_dir"], args.scorer or default_model(), args.sae, args.crossmodal)
            except (ImportError, ValueError) as e:
                print(f"skip {m}: {e}", file=sys.stderr)
                continue
        else:
            raise SystemExit(f"unknown method {m!r}")
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(scores[m]))
    return scores


def table(result: dict) -> str:
    lines = ["| selection | keep | budget | accuracy (mean ± sd, seeds) |", "|---|---|---|---|"]
    for (m, k, b), (mean, sd, n) in sorted(summarise(result["rows"]).items()):
        lines.append(f"| {m} | {k:.2f} | {b} | {mean:.3f} ± {sd:.3f} ({n}) |")
    lines += ["", "| score | " + " | ".join(next(iter(result["auroc"].values()), {}).keys()) + " |"]
    lines.append("|---" * (1 + len(next(iter(result["auroc"].values()), {}))) + "|")
    for m, row in result["auroc"].items():
        lines.append(f"| {m} | " + " | ".join(f"{v:.3f}" for v in row.values()) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tiny", action="store_true", help="a seconds-sized run that only checks the script works")
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-eval", type=int, default=400)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--keeps", type=float, nargs="+", default=[0.2, 0.5, 0.7])
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--methods", nargs="+", default=["random", "ifd", *SAE_METHODS])
    ap.add_argument("--base", choices=("projector", "decoder"), default="projector")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--subject", default=None, help="the model whose vision tower the base gets")
    ap.add_argument("--scorer", default=None, help="the model the SAE reads (default: the zoo subject)")
    ap.add_argument("--sae", default=None, help="SAE directory for the SAE-V scores")
    ap.add_argument("--crossmodal", default=None, help="JSON {feature: weight} for cosine")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    args.subject = args.subject or default_model()
    cfg = ExperimentConfig(n_train=args.n_train, n_eval=args.n_eval, keeps=tuple(args.keeps), seeds=tuple(args.seeds),
                           epochs=args.epochs, base=args.base, lr=args.lr)
    if args.tiny:
        cfg = ExperimentConfig(n_train=48, n_eval=24, keeps=(0.5,), seeds=(0, 1), epochs=1.0, batch=8, base=args.base)
    args.out.mkdir(parents=True, exist_ok=True)
    result = run_experiment(args.out, cfg, args.subject, all_scores(args.out, cfg, args))
    plot(result["rows"], args.out / "accuracy_vs_kept.png")
    (args.out / "table.md").write_text(table(result) + "\n")
    print(table(result))
    return result


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
