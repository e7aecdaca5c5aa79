"""Tiny feature indexes (index.duckdb) built by hand, following the shared index contract exactly,
for the tests of the stages that read an index (index, explain, score, view, ...).

Import with `sys.path.insert(0, <tests dir>)`; `world_index` builds one over "world:n=..,seed=.." whose
images are the world's 64x64 scenes with an 8 x 8 grid of 8-pixel patches (the zoo subject's geometry)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from mmsae.index import SCHEMA_VERSION

SCHEMA = (
    "CREATE TABLE meta(key VARCHAR PRIMARY KEY, value VARCHAR)",
    "CREATE TABLE features(feature INTEGER PRIMARY KEY, n_fires BIGINT, n_image_fires BIGINT, n_text_fires BIGINT, "
    "frequency DOUBLE, mean_act DOUBLE, max_act DOUBLE, image_share DOUBLE)",
    "CREATE TABLE samples(sample INTEGER PRIMARY KEY, sample_id VARCHAR, n_images INTEGER, text VARCHAR)",
    "CREATE TABLE examples(feature INTEGER, rank INTEGER, sample INTEGER, image_index INTEGER, max_act DOUBLE, "
    "mean_act DOUBLE, score DOUBLE)",
    "CREATE TABLE image_patches(sample INTEGER, image_index INTEGER, ord INTEGER, tile INTEGER, patch_row INTEGER, "
    "patch_col INTEGER, x0 DOUBLE, y0 DOUBLE, x1 DOUBLE, y1 DOUBLE)",
    "CREATE TABLE images(sample INTEGER, image_index INTEGER, width INTEGER, height INTEGER)",
    "CREATE TABLE patch_maps(feature INTEGER, rank INTEGER, ords INTEGER[], acts FLOAT[])",
    "CREATE TABLE text_contexts(feature INTEGER, rank INTEGER, sample INTEGER, position INTEGER, token VARCHAR, "
    "activation DOUBLE, context VARCHAR)",
    "CREATE TABLE explanations(feature INTEGER, status VARCHAR, explanation VARCHAR, raw VARCHAR, reason VARCHAR, "
    "model VARCHAR, prompt_version VARCHAR, created DOUBLE)",
    "CREATE TABLE scores(feature INTEGER, metric VARCHAR, value DOUBLE, concept_class VARCHAR, details VARCHAR, "
    "model VARCHAR, created DOUBLE)",
)


def write_index(index_dir, *, meta: dict, features: list[tuple], samples: list[tuple], examples: list[tuple],
                images: list[tuple], image_patches: list[tuple], patch_maps: list[tuple],
                with_explanations: bool = True) -> Path:
    """Write index.duckdb from plain rows (tuples in the contract's column order)."""
    import duckdb

    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(index_dir / "index.duckdb"))
    try:
        for ddl in SCHEMA:
            if with_explanations or "explanations(" not in ddl:
                con.execute(ddl)
        meta = {"schema_version": SCHEMA_VERSION, **meta}  # a caller may write another version on purpose
        con.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
        for table, rows in (("features", features), ("samples", samples), ("examples", examples),
                            ("images", images), ("image_patches", image_patches), ("patch_maps", patch_maps)):
            if rows:  # one statement, each column bound as a list: executemany is slow, Arrow pulls in pandas
                cols = con.execute(f"DESCRIBE {table}").fetchall()
                select = ", ".join(f"unnest(?::{c[1]}[]) AS {c[0]}" for c in cols)
                con.execute(f"INSERT INTO {table} SELECT {select}", [[r[i] for r in rows] for i in range(len(cols))])
    finally:
        con.close()
    return index_dir


@lru_cache(maxsize=4)
def _world(seed: int):
    from mmsae.world import World, WorldConfig

    return World(WorldConfig(seed=seed))


@lru_cache(maxsize=256)
def _scene(seed: int, sample: int):
    return _world(seed)[sample]


def concept_acts(seed: int, sample: int, concept: str, peak: float = 3.0) -> np.ndarray:
    """8 x 8 activations of an ideal feature for `concept` on world scene `sample`: the patch coverage
    of the concept's exact mask, scaled to `peak` (zero where the concept is absent)."""
    scene = _scene(seed, sample)
    return (scene.patch_coverage(scene.concept_mask(concept)) * peak).astype(np.float32)


def concept_feature(seed: int, n: int, concept: str, top: int = 5) -> list[tuple[int, np.ndarray]]:
    """Top images of an ideal `concept` feature among the first n world scenes, strongest first."""
    maps = [(s, concept_acts(seed, s, concept)) for s in range(n) if concept in _scene(seed, s).concepts()]
    maps.sort(key=lambda m: (-float(m[1].sum()), m[0]))
    if not maps:
        raise ValueError(f"no scene among the first {n} of seed {seed} shows {concept!r}")
    return maps[:top]


def world_index(index_dir, feature_maps: dict[int, list[tuple[int, np.ndarray]]], n: int = 12, seed: int = 0,
                n_latents: int = 16, prompt: str = "<image>", with_explanations: bool = True,
                text_only: tuple[int, ...] = ()) -> Path:
    """An index over "world:n=N,seed=S": feature f's top images are feature_maps[f], strongest first, each
    (sample, acts_GG) with an 8 x 8 grid of activations. Features in `text_only` fire on text only (no
    top images); every other latent is dead."""
    from mmsae.world.text import caption

    grid, patch, size = 8, 8, 64
    used = sorted({s for maps in feature_maps.values() for s, _ in maps})
    samples = [(s, f"world-{seed}-{s}", 1, caption(_scene(seed, s))) for s in used]
    images = [(s, 0, size, size) for s in used]
    image_patches = [(s, 0, r * grid + c, 0, r, c, float(c * patch), float(r * patch), float((c + 1) * patch),
                      float((r + 1) * patch)) for s in used for r in range(grid) for c in range(grid)]
    examples, patch_maps, features = [], [], []
    n_tokens = n * (grid * grid + 8)
    for f in range(n_latents):
        maps = feature_maps.get(f, [])
        fires = [a for _, acts_GG in maps for a in acts_GG.ravel() if a > 0]
        for rank, (s, acts_GG) in enumerate(maps):
            flat = acts_GG.ravel()
            ords = np.flatnonzero(flat > 0)
            examples.append((f, rank, s, 0, float(flat.max()), float(flat[ords].mean()) if len(ords) else 0.0,
                             float(flat.max())))
            patch_maps.append((f, rank, ords.tolist(), flat[ords].astype(float).tolist()))
        n_text = 5 if f in text_only else 0
        n_fires = len(fires) + n_text
        features.append((f, n_fires, len(fires), n_text, n_fires / n_tokens,
                         float(np.mean(fires)) if fires else (1.0 if n_text else 0.0),
                         float(max(fires)) if fires else (1.0 if n_text else 0.0),
                         len(fires) / n_fires if n_fires else 0.0))
    meta = {"model": "zoo-subject", "model_fingerprint": "test", "sae": "test-sae", "layer": 3,
            "data": f"world:n={n},seed={seed}", "prompt": prompt, "top_n": max(map(len, feature_maps.values()), default=0),
            "rank_by": "max", "n_records": n, "n_tokens": n_tokens, "n_latents": n_latents, "image_size": size}
    return write_index(index_dir, meta=meta, features=features, samples=samples, examples=examples, images=images,
                       image_patches=image_patches, patch_maps=patch_maps, with_explanations=with_explanations)
