"""`mmsae export neuronpedia`: the text side of a feature index in Neuronpedia's batch export layout.

    <out>/<model_id>/<layer>-<source_set>/
        release.jsonl  model.jsonl  sourceset.jsonl  source.jsonl     one record each
        features/batch-<n>.jsonl.gz                                    one Feature per line
        activations/batch-<n>.jsonl.gz                                 one Activation per top text context
        explanations/batch-<n>.jsonl.gz                                one Explanation per explained feature

The field names follow Neuronpedia's importer (its utils' db_models: Feature, Activation, Explanation,
Source, SourceSet, SourceRelease, Model); ids are derived from the content, so the same index exports to
the same files.

What it cannot carry: image regions. Neuronpedia shows token sequences, so top images, their per-patch
activation maps, heatmaps and masked views, image share and the IoU / CLIP / detection scores (and their
random baselines) are left out; a text context is the index's window around the firing token (the index
keeps the window's decoded text and the firing token's activation, not every token's), so each activation
carries that one value and zeros around it, and its tokens are the window's text split at spaces."""

from __future__ import annotations

import gzip
import hashlib
import json
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..index import browse
from ..index.read import feature_ids, open_index, read_meta
from ..io import atomic_dir, write_config


@dataclass
class ExportConfig:
    index: str
    """the feature index directory to export"""
    out: str
    """output directory (the Neuronpedia layout goes under it; an old export there is replaced)"""
    model_id: str = ""
    """Neuronpedia model id (default: the index's model directory name)"""
    source_set: str = "mmsae-res"
    """Neuronpedia source set name (the layer number is put in front of it)"""
    creator: str = "mmsae"
    """creator name written into the release and source set"""
    batch_size: int = 1024
    """features per batch file"""
    min_fires: int = 1
    """leave out features that fired fewer times (dead latents)"""

    def __post_init__(self):
        if not Path(self.index).exists():
            raise FileNotFoundError(f"index must be an existing feature index, got {self.index!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size!r}")
        if not self.source_set or not all(c.isalnum() or c == "-" for c in self.source_set):
            raise ValueError(f"source_set must be letters, digits and dashes, got {self.source_set!r}")


def _id(*parts) -> str:
    """A 25-character id like Neuronpedia's cuids, derived from the content (stable across exports)."""
    digest = hashlib.sha1("\x1f".join(map(str, parts)).encode()).hexdigest()
    return "c" + digest[:24]


def context_tokens(context: str, activation: float) -> tuple[list[str], list[float], int]:
    """The index's context 'a b <<tok>> c' as (tokens, values, index of the firing token)."""
    a, b = context.find("<<"), context.rfind(">>")
    if a < 0 or b < a:
        tokens = context.split() or [context]
        return tokens, [0.0] * len(tokens), 0
    left, tok, right = context[:a].split(), context[a + 2:b], context[b + 2:].split()
    values = [0.0] * len(left) + [float(activation)] + [0.0] * len(right)
    return left + [tok] + right, values, len(left)


def _gz_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()
    path.write_bytes(gzip.compress(data, compresslevel=5, mtime=0))


def run_export(cfg: ExportConfig) -> dict:
    with closing(open_index(cfg.index)) as con:
        meta = read_meta(con)
        features = feature_ids(con, min_fires=cfg.min_fires)
        model_id = cfg.model_id or Path(str(meta.get("model") or "mmsae-model")).name
        layer = meta.get("layer", 0)
        source_id = f"{layer}-{cfg.source_set}"
        created = datetime.fromtimestamp(0, timezone.utc).isoformat()  # content-derived output: no clock
        counts = {"features": 0, "activations": 0, "explanations": 0, "batches": 0}
        final = Path(cfg.out) / model_id / source_id
        with atomic_dir(final) as tmp:
            one = lambda name, row: (tmp / name).write_text(json.dumps(row, sort_keys=True) + "\n")  # noqa: E731
            one("release.jsonl", {"name": cfg.source_set, "description": f"mmsae SAE on {model_id}",
                                  "descriptionShort": f"mmsae SAE on {model_id}", "urls": [],
                                  "creatorName": cfg.creator, "creatorNameShort": cfg.creator, "createdAt": created})
            one("model.jsonl", {"id": model_id, "displayName": model_id, "displayNameShort": model_id,
                                "instruct": False, "createdAt": created, "updatedAt": created})
            one("sourceset.jsonl", {"modelId": model_id, "name": cfg.source_set, "creatorName": cfg.creator,
                                    "releaseName": cfg.source_set, "visibility": "PUBLIC", "createdAt": created,
                                    "description": f"Residual stream after block {layer} - {meta.get('n_latents', '?')}"})
            one("source.jsonl", {"id": source_id, "modelId": model_id, "setName": cfg.source_set,
                                 "visibility": "PUBLIC", "dataset": str(meta.get("data", "")),
                                 "num_prompts": meta.get("n_records"), "hfRepoId": None, "hfFolderId": None})
            for n, lo in enumerate(range(0, len(features), cfg.batch_size)):
                chunk = features[lo:lo + cfg.batch_size]
                stats, contexts, explanations = browse.neuronpedia_rows(con, chunk)
                feats, acts, expls = [], [], []
                for f in chunk:
                    _, n_fires, frequency, max_act, _ = stats[f]
                    feats.append({"modelId": model_id, "layer": source_id, "index": str(f), "createdAt": created,
                                  "maxActApprox": float(max_act or 0.0), "frac_nonzero": float(frequency or 0.0),
                                  "hasVector": False, "vector": [], "topkCosSimIndices": [], "topkCosSimValues": []})
                    for rank, sample, position, token, activation, context, _ in contexts[f]:
                        tokens, values, at = context_tokens(context, activation)
                        acts.append({"id": _id("act", source_id, f, rank), "modelId": model_id, "layer": source_id,
                                     "index": str(f), "tokens": tokens, "values": values, "maxValue": max(values),
                                     "maxValueTokenIndex": at, "minValue": min(values), "dataIndex": str(sample),
                                     "dataSource": str(meta.get("data", "")), "createdAt": created})
                    for text, model, prompt_version, _ in explanations[f]:
                        expls.append({"id": _id("expl", source_id, f, model, prompt_version, text),
                                      "modelId": model_id, "layer": source_id, "index": str(f), "description": text,
                                      "authorId": cfg.creator, "typeName": f"mmsae-{prompt_version}",
                                      "explanationModelName": model, "createdAt": created})
                _gz_jsonl(tmp / "features" / f"batch-{n}.jsonl.gz", feats)
                _gz_jsonl(tmp / "activations" / f"batch-{n}.jsonl.gz", acts)
                _gz_jsonl(tmp / "explanations" / f"batch-{n}.jsonl.gz", expls)
                counts["features"] += len(feats)
                counts["activations"] += len(acts)
                counts["explanations"] += len(expls)
                counts["batches"] += 1
            write_config(tmp, cfg)
    return {"out": str(final), **counts,
            "left_out": "image regions: top images, patch maps, heatmaps, image share, IoU/CLIP/detection scores"}
