"""`mmsae filter score` throughput (records/s) against a bare harvest of the same records, same run, same
machine (goal: >= 0.8x). Reports the ratio only; absolute numbers depend on the machine's load.

    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/saev_filter.py --sae DIR [--records 256] [--method cooccur]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sae", type=Path, required=True)
    ap.add_argument("--records", type=int, default=256)
    ap.add_argument("--method", default="cooccur")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    from mmsae.pipeline.layer import DEMO_PROMPT
    from mmsae.sae import SAE
    from mmsae.saev.filter import FilterScoreConfig, run_filter_score
    from mmsae.store import HarvestConfig, harvest

    layer = SAE.from_pretrained(args.sae).cfg.hook_layer
    data = f"world:n={args.records},seed=3"
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        harvest(HarvestConfig(out=str(Path(tmp) / "h"), layer=layer, data=data, prompt=DEMO_PROMPT,
                              batch_size=args.batch, device=args.device, progress=False))
        t_harvest = time.perf_counter() - t0
        t0 = time.perf_counter()
        run_filter_score(FilterScoreConfig(sae=str(args.sae), data=data, prompt=DEMO_PROMPT, out=str(Path(tmp) / "f"),
                                           method=args.method, threshold=0.0, batch_size=args.batch,
                                           device=args.device, progress=False))
        t_score = time.perf_counter() - t0
    print(json.dumps({"records": args.records, "method": args.method, "harvest_records_per_s": args.records / t_harvest,
                      "score_records_per_s": args.records / t_score, "ratio": t_harvest / t_score}, indent=1))


if __name__ == "__main__":
    main()
