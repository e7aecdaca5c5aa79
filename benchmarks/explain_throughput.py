"""Explain throughput: features/minute of `mmsae explain` against `mmsae serve-explainer`, 1 vs 8 requests in flight.

    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/explain_throughput.py --index DIR [--features 32] [--json]

DIR is a built feature index (e.g. a demo's index-layer3). The server (the zoo explainer by default) runs in its
own process, as vLLM would; each concurrency level explains the same features into a fresh copy of the index
with the response cache off, so every request reaches the server.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--concurrency", default="1,8")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from mmsae.pipeline.layer import explainer_server
    from mmsae.explain.run import ExplainConfig, run_explain
    from mmsae.index import open_index, top_features

    con = open_index(args.index)
    features = [f.feature for f in top_features(con, min_examples=5, limit=args.features)]
    con.close()
    results = {}
    with explainer_server() as url, tempfile.TemporaryDirectory() as tmp:
        for c in (int(x) for x in args.concurrency.split(",")):
            copy = Path(tmp) / f"index-c{c}"
            shutil.copytree(args.index, copy)
            with open_index(copy, read_only=False) as db:
                db.execute("DELETE FROM explanations")
            t0 = time.perf_counter()
            out = run_explain(ExplainConfig(index=copy, features=features, backend="http", base_url=url, model="explainer",
                                            concurrency=c, chunk_size=len(features), cache=False, progress=False))
            elapsed = time.perf_counter() - t0
            results[c] = {"features": len(features), "seconds": elapsed, "features_per_min": 60 * len(features) / elapsed,
                          "explained": out["explained"], "uninterpretable": out["uninterpretable"], "failed": out["failed"]}
    lo, hi = min(results), max(results)
    report = {"results": results, f"speedup_{hi}_over_{lo}": results[hi]["features_per_min"] / results[lo]["features_per_min"]}
    print(json.dumps(report, indent=2) if args.json else report)


if __name__ == "__main__":
    main()
