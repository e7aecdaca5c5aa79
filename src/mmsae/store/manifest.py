"""Merging committed shards into the manifest and rejects.jsonl (also across ranks)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from mmsae.models.table import MODALITIES

from .files import FORMAT, MANIFEST, REJECTS, write_json, write_text
from .shard import read_meta


def _versions() -> dict:
    import transformers

    try:
        from importlib.metadata import version

        mmsae_version = version("mmsae")
    except Exception:
        mmsae_version = "unknown"
    return {"mmsae": mmsae_version, "torch": torch.__version__.split("+")[0], "transformers": transformers.__version__}


def finalize(root: Path, cfg, identity: dict, source, n_shards: int, n_records: int, world: int,
             command: str) -> dict:
    """Write manifest.json and rejects.jsonl from the shards' commit markers.

    Everything here is a pure function of the shards, so a resumed run writes the same bytes."""
    from transformers import AutoConfig

    from mmsae.models.registry import adapter_class

    metas = []
    for k in range(n_shards):
        meta = read_meta(root, k)
        if meta is None:
            raise RuntimeError(f"shard {k} is missing after harvest; rerun the same command to finish it")
        metas.append(meta)
    d_in = None
    sum_D = None
    shards, rejects = [], []
    rows = dict.fromkeys(MODALITIES, 0)
    tokens = dict.fromkeys(MODALITIES, 0)
    row, sum_norm, n_samples = 0, 0.0, 0
    for meta in metas:
        with safe_open(root / meta["acts"], framework="pt") as fh:
            part_D = fh.get_tensor("sum_D")
            d_in = fh.get_slice("acts").get_shape()[1]
        sum_D = part_D if sum_D is None else sum_D + part_D
        shards.append({"index": meta["index"], "acts": meta["acts"], "table": meta["table"], "row_start": row,
                       "row_end": row + meta["n_rows"], "records": meta["records"]})
        row += meta["n_rows"]
        sum_norm += meta["sum_norm"]
        n_samples += meta["n_samples"]
        for m in MODALITIES:
            rows[m] += meta["rows"][m]
            tokens[m] += meta["tokens"][m]
        rejects += meta["rejects"]
    config = AutoConfig.from_pretrained(cfg.model)
    mean = (sum_D / max(row, 1)).tolist() if sum_D is not None else []
    manifest = {
        "format": FORMAT,
        "model": {"path": str(Path(cfg.model).resolve()), "fingerprint": identity["model_fingerprint"],
                  "model_type": config.model_type, "family": adapter_class(config.model_type).family},
        "layer": cfg.layer,
        "hook": f"output of decoder block {cfg.layer} (0-indexed) = hidden_states[{cfg.layer + 1}] "
                f"= paper layer {cfg.layer + 1}",
        "dtype": cfg.dtype,
        "d_in": d_in,
        "tokens": cfg.tokens,
        "include_special": cfg.include_special,
        "n_records": n_records,
        "n_samples": n_samples,
        "n_rejects": len(rejects),
        "n_rows": row,
        "counts": {"rows": rows, "tokens": tokens},
        "mean": mean,
        "mean_norm": sum_norm / max(row, 1),
        "shards": shards,
        "data": source.describe(),
        "settings": identity,
        "created_by": {"command": command, "world_size": world, **_versions()},
    }
    lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rejects)
    write_text(root / REJECTS, lines)
    write_json(root / MANIFEST, manifest)
    return manifest
