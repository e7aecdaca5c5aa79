"""Interpretability over the whole feature population, and the ceiling an oracle explainer reaches.

    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/interp_ceiling.py --work /tmp/ceiling [--scenes 1000] [--json]
    ... --layers 3 --train-scenes 2000 --steps 2000 --k 8 --pairs   # other SAE settings; compositions in the oracle

For the demo's three layers (its SAEs, trained here with the demo's own harvest and training settings when
--work does not hold them yet): index `--scenes` held-out world scenes, explain EVERY image feature (not the demo's
sample of 48) with the zoo explainer in-process, score IoU against the three random baselines, and compute what an
oracle explainer would score: for each feature, the one world concept whose exact mask has the best IoU with its
top-5 activation regions (and "unable" when even that is <= --oracle-cut), scored against the same random
explanation baseline (another explained feature's concept on the same top images, as an exact expectation).

The oracle is not an explainer anyone has; it bounds what any single-concept explanation can reach on these SAE
features, so a model/random ratio can be read against it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

LAYERS = (1, 3, 5)


def sae_for(work: Path, layer: int, train_scenes: int = 400, k: int = 16, steps: int = 800) -> Path:
    """The SAE for `layer`, trained once under `work`; the defaults are the demo's settings (400 scenes of
    seed 7, 1024 latents, k 16, 800 steps of 1024 tokens)."""
    from mmsae.pipeline.layer import harvest_layer, train_layer

    tag = "" if (train_scenes, k, steps) == (400, 16, 800) else f"-h{train_scenes}-k{k}-s{steps}"
    sae = work / f"sae-layer{layer}{tag}" / "sae"
    if not (sae / "config.json").exists():
        store = harvest_layer(work / f"store-layer{layer}-h{train_scenes}", layer, train_scenes, seed=7)
        train_layer(store, sae.parent, layer, steps=steps, k=k)
    return sae


def breakdown(index_dir: Path) -> dict:
    """The explainer's IoU by how often a feature fires on image tokens, and its most frequent answers."""
    from mmsae.index import open_index

    con = open_index(index_dir)
    try:
        bins = con.execute(
            "SELECT CASE WHEN f.n_image_fires < 100 THEN '<100' WHEN f.n_image_fires < 1000 THEN '100-999' "
            "ELSE '>=1000' END AS fires, count(*), avg(s.value) FROM scores s JOIN features f USING (feature) "
            "WHERE s.metric = 'iou' GROUP BY fires ORDER BY fires").fetchall()
        answers = con.execute(
            "SELECT e.explanation, count(*), avg(s.value) FROM explanations e JOIN scores s USING (feature) "
            "WHERE s.metric = 'iou' GROUP BY e.explanation ORDER BY count(*) DESC, e.explanation LIMIT 8").fetchall()
    finally:
        con.close()
    return {"iou_by_image_fires": {b: {"n": n, "iou": v} for b, n, v in bins},
            "top_answers": {a: {"n": n, "iou": v} for a, n, v in answers}}


def run_layer(work: Path, layer: int, scenes: int, cuts: tuple[float, ...], sae_settings: dict, pairs: bool) -> dict:
    from mmsae.pipeline.layer import DEMO_PROMPT, image_features
    from mmsae.pipeline.oracle import oracle, oracle_vocabulary
    from mmsae.explain.run import ExplainConfig, run_explain
    from mmsae.index import IndexConfig, build_index
    from mmsae.score.run import ScoreConfig, run_score

    sae = sae_for(work, layer, **sae_settings)
    index_dir = work / f"index-{sae.parent.name}-n{scenes}"
    t0 = time.perf_counter()
    build_index(IndexConfig(out=str(index_dir), sae=str(sae), data=f"world:n={scenes},seed=9", prompt=DEMO_PROMPT,
                            progress=False))
    features = image_features(index_dir)
    explained = run_explain(ExplainConfig(index=index_dir, features=features, backend="local", progress=False))
    summary = run_score(ScoreConfig(index=index_dir, features=features, clip=False, progress=False))
    means = {m: s["mean"] for m, s in summary["metrics"].items()}
    return {"layer": layer, "image_features": len(features), "explained": explained.get("explained"),
            "uninterpretable": explained.get("uninterpretable"), **means,
            "ratios": {k: v for k, v in summary["ratios"].items() if "/" in k},
            "sae": str(sae), "sae_settings": sae_settings, **breakdown(index_dir),
            "oracle": oracle(index_dir, features, cuts, oracle_vocabulary(False)),
            **({"oracle_with_pairs": oracle(index_dir, features, cuts, oracle_vocabulary(True))} if pairs else {}),
            "seconds": round(time.perf_counter() - t0, 1)}


def markdown(rows: list[dict]) -> str:
    lines = ["| layer | explained / image features | IoU | random images | random explanation | random region | "
             "oracle IoU (cut 0.2) | oracle random expl. | oracle ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        o = r["oracle"].get("0.2", {})
        cells = [f"{r[b]:.3f} ({r['iou'] / r[b]:.1f}x)" for b in ("iou_random_images", "iou_random_expl", "iou_random")]
        lines.append(f"| {r['layer']} | {r['explained']} / {r['image_features']} | {r['iou']:.3f} | {' | '.join(cells)} | "
                     f"{o.get('iou', float('nan')):.3f} | {o.get('iou_random_expl', float('nan')):.3f} | "
                     f"{o.get('ratio', float('nan')):.1f}x |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="working directory (SAEs, indexes); reused when rerun")
    ap.add_argument("--scenes", type=int, default=1000, help="held-out world scenes to index (seed 9)")
    ap.add_argument("--layers", default=",".join(map(str, LAYERS)))
    ap.add_argument("--oracle-cut", default="0,0.1,0.2,0.3", help="oracle: 'unable' at or below this best IoU")
    ap.add_argument("--train-scenes", type=int, default=400, help="SAE training scenes (seed 7); the demo's 400")
    ap.add_argument("--k", type=int, default=16, help="SAE k (the demo's 16)")
    ap.add_argument("--steps", type=int, default=800, help="SAE training steps of 1024 tokens (the demo's 800)")
    ap.add_argument("--pairs", action="store_true", help="also an oracle that may name attribute x object pairs")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    cuts = tuple(float(c) for c in args.oracle_cut.split(","))
    settings = {"train_scenes": args.train_scenes, "k": args.k, "steps": args.steps}
    rows = [run_layer(args.work, int(layer), args.scenes, cuts, settings, args.pairs) for layer in args.layers.split(",")]
    print(json.dumps(rows, indent=1) if args.json else markdown(rows))


if __name__ == "__main__":
    main()
