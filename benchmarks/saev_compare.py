"""SAE vs SAE-V on the embedded world at a chosen size: a text-only SAE (captions through the subject without
images) and an SAE-V (image+text), ReLU+L1 and TopK, the same steps x batch, evaluated on image+text and on
text-only held-out data, split by modality (FVU, L0, dead fraction, CE loss recovered, KL).

    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/saev_compare.py --out DIR [--train 2000] [--steps 2000] [--json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--train", type=int, default=2000, help="image+text training scenes")
    ap.add_argument("--text", type=int, default=8000, help="text-only training captions")
    ap.add_argument("--eval", type=int, default=200)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--expansion", type=int, default=8)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--splice", type=int, default=64, help="records for CE/KL recovered")
    ap.add_argument("--kinds", default="topk,relu")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from mmsae.data import open_source
    from mmsae.defaults import default_model
    from mmsae.pipeline.layer import DEMO_LAYER, DEMO_PROMPT
    from mmsae.models import load_adapter
    from mmsae.saev.compare import compare, table, text_only_jsonl, train_sae
    from mmsae.store import HarvestConfig, harvest

    out, layer = args.out, DEMO_LAYER
    out.mkdir(parents=True, exist_ok=True)
    data = {"it": (f"world:n={args.train},seed=7", DEMO_PROMPT), "it-eval": (f"world:n={args.eval},seed=8", DEMO_PROMPT),
            "text": (str(text_only_jsonl(out / "text.jsonl", args.text, 7)), None),
            "text-eval": (str(text_only_jsonl(out / "text-eval.jsonl", args.eval, 8)), None)}
    for name, (spec, prompt) in data.items():
        harvest(HarvestConfig(out=str(out / f"store-{name}"), layer=layer, data=spec, prompt=prompt, progress=False))
    saes = {}
    for kind in args.kinds.split(","):
        suffix = "" if kind == "topk" else f"_{kind}"
        for name, store in (("sae_text", "text"), ("saev", "it")):
            saes[name + suffix] = train_sae(out / f"store-{store}", out / f"{name}{suffix}", kind, args.steps, layer,
                                            expansion=args.expansion, k=args.k)
    adapter = load_adapter(default_model())
    sources = {"image_text": open_source(data["it-eval"][0], prompt=DEMO_PROMPT), "text": open_source(data["text-eval"][0])}
    m = compare(saes, {"image_text": out / "store-it-eval", "text": out / "store-text-eval"}, adapter, sources, layer,
                args.splice)
    (out / "metrics.json").write_text(json.dumps(m, indent=1, sort_keys=True))
    print(json.dumps(m, indent=1, sort_keys=True) if args.json else table(m, list(saes)))


if __name__ == "__main__":
    main()
