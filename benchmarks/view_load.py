"""Viewer load test: C concurrent clients browsing feature pages (and their images) on loopback for T seconds.

    PYTHONPATH=src python benchmarks/view_load.py [--index DIR] [--clients 50] [--seconds 30] [--json]

Without --index it builds a small world index (tests/index_fixture.py) in a temporary directory. The viewer
runs in this process under uvicorn on 127.0.0.1 (a free port); each client is an httpx.AsyncClient that
loops: the feature list (a random page and sort), a random feature's page, then that page's first top image
in a random view. Reported: requests, errors (any non-200 or transport error, with the first few named),
requests/s and latency p50 / p95 / max in ms, per kind of request and overall."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path


def build_fixture_index(root: Path) -> Path:
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from index_fixture import concept_feature, world_index

    concepts = ["red", "blue", "green", "circle", "square", "triangle", "star", "large", "small", "yellow"]
    maps = {}
    for f, concept in enumerate(concepts):
        try:
            maps[f] = concept_feature(0, 48, concept, top=8)
        except ValueError:
            continue
    rng = np.random.default_rng(0)
    for f in range(len(concepts), 64):  # random sparse maps on random scenes
        maps[f] = [(int(s), (rng.random((8, 8)) * (rng.random((8, 8)) > 0.7)).astype(np.float32))
                   for s in rng.choice(48, 6, replace=False)]
    return world_index(root / "idx", maps, n=48, n_latents=64)


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


async def client(base: str, features: list[int], stop: float, seed: int, lat: dict, errors: list) -> None:
    import httpx

    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=base, timeout=30.0) as http:
        while time.perf_counter() < stop:
            f = rng.choice(features)
            view = rng.choice(["heatmap", "masked", "plain"])
            sort = rng.choice(["frequency", "max_act", "image_share", "feature"])
            for kind, url in (("list", f"/?sort={sort}&page={rng.randint(1, 2)}&per_page=25"),
                              ("feature", f"/feature/{f}"), ("image", f"/img/{f}/0/{view}.png")):
                t0 = time.perf_counter()
                try:
                    r = await http.get(url)
                    ok = r.status_code == 200
                    why = f"{url}: HTTP {r.status_code}"
                except httpx.HTTPError as e:
                    ok, why = False, f"{url}: {type(e).__name__}: {e}"
                lat[kind].append(1000 * (time.perf_counter() - t0))
                if not ok:
                    errors.append(why)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", help="a feature index (default: a small world index built here)")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args()

    import uvicorn

    from mmsae.index.read import open_index, top_features
    from mmsae.view.app import ViewConfig, build_app

    with tempfile.TemporaryDirectory() as tmp:
        index = args.index or str(build_fixture_index(Path(tmp)))
        con = open_index(index)
        features = [s.feature for s in top_features(con, min_fires=0, min_examples=1, order_by="feature")]
        con.close()
        if not features:
            raise SystemExit(f"the index at {index} has no feature with top images to browse")
        app = build_app(ViewConfig(index=index))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                               access_log=False))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not (server.started and server.servers):
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://localhost:{port}"
        lat: dict[str, list[float]] = {"list": [], "feature": [], "image": []}
        errors: list[str] = []

        async def run():
            stop = time.perf_counter() + args.seconds
            await asyncio.gather(*(client(base, features, stop, i, lat, errors) for i in range(args.clients)))

        t0 = time.perf_counter()
        asyncio.run(run())
        wall = time.perf_counter() - t0
        server.should_exit = True
        thread.join(10)
    every = [x for xs in lat.values() for x in xs]
    summary = lambda xs: {"n": len(xs), "p50_ms": round(percentile(xs, 0.5), 1),  # noqa: E731
                          "p95_ms": round(percentile(xs, 0.95), 1), "max_ms": round(max(xs, default=float("nan")), 1)}
    result = {"clients": args.clients, "seconds": round(wall, 2), "requests": len(every), "errors": len(errors),
              "first_errors": errors[:5], "requests_per_s": round(len(every) / wall, 1), "all": summary(every),
              **{kind: summary(xs) for kind, xs in lat.items()}}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['clients']} clients, {result['seconds']} s: {result['requests']} requests, "
              f"{result['errors']} errors, {result['requests_per_s']} req/s")
        for kind in ("all", "list", "feature", "image"):
            s = result[kind]
            print(f"  {kind:8s} n={s['n']:6d}  p50 {s['p50_ms']:8.1f} ms  p95 {s['p95_ms']:8.1f} ms  max {s['max_ms']:8.1f} ms")
        for e in result["first_errors"]:
            print("  error:", e)


if __name__ == "__main__":
    main()
