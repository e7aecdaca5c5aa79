"""One layer of the subject end to end: harvest -> train a TopK SAE -> index -> explain -> score.

Every parameter is explicit (the demo's values are the defaults of `LayerSettings`); each step is a
function that returns what it wrote, so the demo, the benchmarks and the viewer compose them as they need.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEMO_LAYER = 3  # output of decoder block 3 of the subject's 6 ("layer 4" in the papers' naming)
DEMO_PROMPT = "<s> user : <image> {caption}"  # image and text tokens, as SAE-V trains on
INDEX_DATA = "world:n=300,seed=9"  # held out from the SAE's training scenes (seeds 7 and 8)


@contextmanager
def explainer_server(timeout_s: float = 300.0):
    """The zoo explainer behind an OpenAI-compatible endpoint, as vLLM would serve a larger LMM:
    `mmsae serve-explainer --port 0` in a child process; yields its base URL, stops it afterwards."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "mmsae", "serve-explainer", "--port", "0", "--name", "explainer"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    try:
        url, deadline = None, time.time() + timeout_s
        while url is None:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                raise RuntimeError(f"serve-explainer exited with code {proc.returncode} before serving")
            if m := re.search(r"on (http://\S+/v1)", line):
                url = m.group(1)
            if time.time() > deadline:
                raise TimeoutError("serve-explainer did not start in time")
        import httpx

        httpx.get(f"{url}/models", timeout=30).raise_for_status()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def harvest_layer(out: Path, layer: int, n: int = 400, seed: int = 7, prompt: str = DEMO_PROMPT) -> Path:
    """An activation store of block `layer` of the zoo subject over `n` world scenes of `seed`."""
    from ..store import HarvestConfig, harvest

    harvest(HarvestConfig(out=str(out), layer=layer, data=f"world:n={n},seed={seed}", prompt=prompt, progress=False))
    return Path(out)


def train_layer(store: Path, out: Path, layer: int, steps: int = 800, k: int = 16, expansion: int = 8, seed: int = 0):
    """A TopK SAE trained on `store` into `out` (its weights in `out/sae`); returns the SAE."""
    from ..train import StoreBatches, TrainConfig, train

    cfg = TrainConfig(kind="topk", expansion=expansion, k=k, steps=steps, warmup_steps=100, checkpoint_every=500,
                      hook_layer=layer, seed=seed)
    return train(cfg, StoreBatches(store, batch_size=1024, seed=seed), out)


def index_layer(sae_dir: Path, out: Path, data: str = INDEX_DATA, prompt: str = DEMO_PROMPT) -> Path:
    """The feature index of the SAE in `sae_dir` over `data`."""
    from ..index import IndexConfig, build_index

    build_index(IndexConfig(out=str(out), sae=str(sae_dir), data=data, prompt=prompt, progress=False))
    return Path(out)


def image_features(index_dir: Path) -> list[int]:
    """The index's image features: firing mostly on image tokens, with >= 5 top images; by id."""
    from ..index import open_index, top_features

    con = open_index(index_dir)
    try:
        return [f.feature for f in top_features(con, min_examples=5, min_image_share=0.5, order_by="feature")]
    finally:
        con.close()


def pick_features(index_dir: Path, n: int | None, seed: int = 0) -> list[int]:
    """A seeded random sample of n of the index's image features (all of them when n is None or larger)."""
    pool = image_features(index_dir)
    if n is None or n >= len(pool):
        return pool
    rng = np.random.default_rng(seed)
    return sorted(int(f) for f in rng.choice(pool, size=n, replace=False))


def explain_layer(index_dir: Path, features: list[int], url: str, model: str) -> dict:
    """Explanations of `features` from an OpenAI-compatible server at `url` serving `model`."""
    from ..explain.run import ExplainConfig, run_explain

    return run_explain(ExplainConfig(index=index_dir, features=features, backend="http", base_url=url, model=model,
                                     progress=False))


def score_layer(index_dir: Path, features: list[int], detection: int = 0, trials: int = 100, seed: int = 0) -> dict:
    """IoU (with its three random baselines) and CLIP scores of the explained `features`; with
    `detection` > 0, also the detection balanced accuracy of that many of them (a separate, smaller run:
    each feature costs about ten judge answers). Returns the score summary."""
    from ..score.run import ScoreConfig, run_score

    summary = run_score(ScoreConfig(index=index_dir, features=features, trials=trials, seed=seed, progress=False))
    if detection:
        det = run_score(ScoreConfig(index=index_dir, features=features, limit=detection, iou=False, clip=False,
                                    detection=True, seed=seed, progress=False))
        summary["metrics"]["detection_bacc"] = det["metrics"].get("detection_bacc")
    return summary


@dataclass
class LayerSettings:
    """What `run_layer` does for one layer (the demo's values)."""

    harvest_scenes: int = 400  # SAE training scenes (world seed harvest_seed)
    harvest_seed: int = 7
    steps: int = 800  # SAE training steps of 1024 tokens
    k: int = 16
    index_data: str = INDEX_DATA
    prompt: str = DEMO_PROMPT
    n_features: int | None = 48  # image features explained and scored (a seeded sample); None: all
    feature_seed: int | None = None  # None: the layer number (each layer its own sample)
    detection: int = 0  # features also scored for detection
    trials: int = 100  # random-baseline trials per feature


@dataclass
class LayerResult:
    layer: int
    store: Path | None  # None when the SAE was given
    sae: Path
    index: Path
    features: list[int]  # the sampled features, explained and scored
    explain: dict  # explained / uninterpretable / failed counts
    summary: dict = field(repr=False)  # the score summary (means per metric and per concept class)


def run_layer(out: Path, layer: int, url: str, model: str, settings: LayerSettings | None = None,
              sae_dir: Path | None = None) -> LayerResult:
    """Harvest, train (unless `sae_dir` is given), index, explain and score block `layer` under `out`:
    `store-layer{L}/`, `sae-layer{L}/sae/`, `index-layer{L}/`. `url`/`model`: the explainer server."""
    s = settings or LayerSettings()
    out = Path(out)
    store = None
    if sae_dir is None:
        store = harvest_layer(out / f"store-layer{layer}", layer, s.harvest_scenes, seed=s.harvest_seed, prompt=s.prompt)
        train_layer(store, out / f"sae-layer{layer}", layer, steps=s.steps, k=s.k)
        sae_dir = out / f"sae-layer{layer}" / "sae"
    index_dir = index_layer(sae_dir, out / f"index-layer{layer}", s.index_data, s.prompt)
    features = pick_features(index_dir, s.n_features, seed=layer if s.feature_seed is None else s.feature_seed)
    explained = explain_layer(index_dir, features, url, model)
    summary = score_layer(index_dir, features, detection=s.detection, trials=s.trials)
    counts = {k: explained.get(k) for k in ("explained", "uninterpretable", "failed")}
    return LayerResult(layer, store, Path(sae_dir), index_dir, features, counts, summary)
