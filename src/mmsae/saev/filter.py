"""`mmsae filter score` and `mmsae filter select`: SAE-based data filtering (SAE-V, Algorithm 1).

score: every record through the LMM (early exit at the SAE's layer) and the SAE; `OUT/` gets
  scores.jsonl   {"index", "id", "score"} per scored record (appended per chunk: the unit of resume)
  rejects.jsonl  {"index", "id", "reason"} per record that could not be scored
  the data written back with every original field and a `saev_<method>` column (data.jsonl,
  data.parquet, data/ for HF datasets, images/ + metadata.jsonl for an image folder or the world)
  saev.json      what was done: method, column, token rule, the spec that reads the written data
select: the top (or bottom) `keep` fraction of a scored dataset by a column, ties broken by record
  order (the earlier record wins), written in the same format with the same layout.

Resume after kill -9: scores.jsonl and rejects.jsonl are truncated to the sizes recorded with the
last saved chunk, so a rerun neither repeats nor loses a record.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from mmsae.defaults import default_model

from .scoring import EXCLUDED, METHODS

SCORES_FILE = "scores.jsonl"
REJECTS_FILE = "rejects.jsonl"
STATE_FILE = "filter-state.json"
INFO_FILE = "saev.json"


@dataclass
class FilterScoreConfig:
    sae: str
    """SAE checkpoint folder (its hook layer is the layer read)"""
    data: str
    """data spec: world:..., folder:PATH, jsonl:PATH, hf:PATH, parquet:PATH"""
    out: str
    """output directory (scores.jsonl, rejects.jsonl, the data with a saev_<method> column, saev.json)"""
    method: str = "cooccur"
    """l0 | cooccur | cosine | clip | random"""
    model: str | None = None
    """LMM checkpoint (None: the zoo subject)"""
    prompt: str | None = None
    """prompt template (None: the source's default)"""
    format: str | None = None
    """output format: jsonl | parquet | hf | folder (None: the input's)"""
    threshold: float = 1.0
    """activation above which a latent counts as active on a token for cooccur and cosine (paper code: 1)"""
    index: str | None = None
    """feature index of this SAE holding cross-modal weights (mmsae crossmodal), for cosine"""
    clip: str | None = None
    """CLIP checkpoint for clip (None: the zoo's)"""
    seed: int = 0
    """seed of the random baseline"""
    batch_size: int = 8
    """sequences per forward pass"""
    chunk_records: int = 256
    """records between two saves of the progress (the unit of resume)"""
    max_records: int | None = None
    """score only the first records (None: all)"""
    max_seq_len: int | None = None
    """longer sequences are rejected"""
    device: str = "auto"
    """auto: cuda when available, else cpu"""
    progress: bool = True
    """show a progress bar"""

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        for name in ("batch_size", "chunk_records"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.max_records is not None and self.max_records < 1:
            raise ValueError(f"max_records must be >= 1 or None, got {self.max_records!r}")
        if self.method == "cosine" and not self.index:
            raise ValueError("method cosine needs cross-modal weights: compute them with `mmsae crossmodal "
                             "--index DIR` on an index of this SAE, then pass --index DIR")

    @property
    def column(self) -> str:
        return f"saev_{self.method}"

    def identity(self) -> dict:
        skip = ("out", "device", "progress", "format")
        return {k: v for k, v in asdict(self).items() if k not in skip}


def _weights(cfg: FilterScoreConfig, n_latents: int):
    from mmsae.index import open_index, read_meta
    from mmsae.index.crossmodal import crossmodal_weights
    from mmsae.store.files import model_fingerprint

    con = open_index(cfg.index)
    try:
        fp = read_meta(con).get("sae_fingerprint")
        if fp and fp != model_fingerprint(cfg.sae):
            raise ValueError(f"index {cfg.index} was built with another SAE than {cfg.sae}")
        return crossmodal_weights(con, n_latents)
    finally:
        con.close()


def _needs_images(cfg: FilterScoreConfig, source) -> None:
    if cfg.method in ("cooccur", "cosine", "clip") and getattr(source, "image_column", "") is None:
        raise ValueError(f"method {cfg.method} needs images but data {cfg.data} has no image column "
                         "(name it with ?image_column=NAME)")


def run_filter_score(cfg: FilterScoreConfig) -> dict:
    """Score (or resume scoring) every record; write the scored data; a JSON summary."""
    import torch

    from mmsae.data import open_source
    from mmsae.data.write import write_dataset
    from mmsae.io import JsonlAppender, write_config, write_json
    from mmsae.sae import SAE
    from mmsae.util import pick_device, progress

    from .scoring import ScoreBatch

    if not Path(cfg.sae).exists():
        raise FileNotFoundError(f"no SAE checkpoint at {cfg.sae}")
    source = open_source(cfg.data, prompt=cfg.prompt)
    _needs_images(cfg, source)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_config(out, cfg)
    n = len(source) if cfg.max_records is None else min(cfg.max_records, len(source))
    identity = {**cfg.identity(), "n_records": n, "source": source.describe()}
    state_path = out / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.exists() else None
    if state is not None and state["identity"] != json.loads(json.dumps(identity, default=str)):
        raise ValueError(f"{out} holds scores made with other settings; use a new --out")
    start = state["next_record"] if state else 0
    scores = JsonlAppender(out / SCORES_FILE, state["scores_bytes"] if state else 0)
    rejects = JsonlAppender(out / REJECTS_FILE, state["reject_bytes"] if state else 0)
    try:
        if start < n:
            device = pick_device(cfg.device)
            sae = SAE.from_pretrained(cfg.sae).to(device).eval()
            adapter = None
            if cfg.method not in ("random", "clip"):
                from mmsae.models import load_adapter

                adapter = load_adapter(cfg.model or default_model(), device=device)
            weights = _weights(cfg, sae.cfg.n_latents) if cfg.method == "cosine" else None
            scorer = ScoreBatch(adapter, sae, cfg.method, crossmodal=weights, threshold=cfg.threshold,
                                seed=cfg.seed, clip=cfg.clip, batch_size=cfg.batch_size, max_seq_len=cfg.max_seq_len)
            reject = lambda i, rid, reason: rejects.write({"index": i, "id": rid, "reason": reason})  # noqa: E731
            with progress(cfg.progress, n - start, f"filter score {cfg.method}") as advance, torch.no_grad():
                for lo in range(start, n, cfg.chunk_records):
                    hi = min(lo + cfg.chunk_records, n)
                    for consumed, rows in scorer.batches(source, range(lo, hi), reject):
                        for i, rid, s in rows:
                            scores.write({"index": i, "id": rid, "score": s})
                        advance(len(consumed))
                    saved = {"identity": identity, "next_record": hi, "scores_bytes": scores.sync(),
                             "reject_bytes": rejects.sync()}
                    write_json(state_path, json.loads(json.dumps(saved, default=str)))
    finally:
        scores.close()
        rejects.close()
    by_index, rejected = _read_scores(out)
    missing = [i for i in range(n) if i not in by_index and i not in rejected]
    if missing:
        raise RuntimeError(f"records {missing[:10]} were neither scored nor rejected (a bug; rerun to resume)")
    values = [by_index[i][1] if i in by_index else None for i in range(len(source))]
    written = write_dataset(source, out, {cfg.column: values}, fmt=cfg.format)
    info = {"method": cfg.method, "column": cfg.column, "tokens": EXCLUDED, "spec": written.spec,
            "format": written.format, "data": cfg.data, "n_records": n, "n_scored": len(by_index),
            "n_rejects": len(rejected), "keyed_by": "record id (scores.jsonl: index, id, score)",
            "l0": "mean over the record's text and image tokens of the active latents" if cfg.method == "l0" else None,
            "threshold": cfg.threshold if cfg.method in ("cooccur", "cosine") else None}
    write_json(out / INFO_FILE, info)
    return {**info, "out": str(out)}


def _read_scores(out: Path) -> tuple[dict[int, tuple[str, float]], dict[int, str]]:
    scored: dict[int, tuple[str, float]] = {}
    for line in (out / SCORES_FILE).read_text().splitlines():
        o = json.loads(line)
        scored[int(o["index"])] = (o["id"], float(o["score"]))
    rejected = {int(o["index"]): o["reason"] for o in map(json.loads, (out / REJECTS_FILE).read_text().splitlines())}
    return scored, rejected


@dataclass
class FilterSelectConfig:
    scores: str
    """a `mmsae filter score` output directory"""
    out: str
    """output directory for the kept records (same format and layout)"""
    keep: float = 0.5
    """fraction of the scored records to keep, in (0, 1]"""
    by: str | None = None
    """score column to rank by (None: the one the scoring wrote, e.g. saev_cooccur)"""
    bottom: bool = False
    """keep the lowest scores instead of the highest"""
    format: str | None = None
    """output format (None: the scored data's)"""

    def __post_init__(self):
        if not (isinstance(self.keep, (int, float)) and 0 < self.keep <= 1):
            raise ValueError(f"keep must be in (0, 1], got {self.keep!r}")


def select_rows(values: list, keep: float, bottom: bool = False) -> list[int]:
    """Indices (in record order) of the top (bottom) `keep` fraction of the records with a value; ties
    go to the earlier record. round(keep x n), at least one."""
    scored = [(float(v), i) for i, v in enumerate(values) if v is not None and not math.isnan(float(v))]
    n_keep = max(1, int(math.floor(keep * len(scored) + 0.5))) if scored else 0
    ranked = sorted(scored, key=(lambda t: (t[0], t[1])) if bottom else (lambda t: (-t[0], t[1])))
    return sorted(i for _, i in ranked[:n_keep])


def run_filter_select(cfg: FilterSelectConfig) -> dict:
    from mmsae.data import open_source
    from mmsae.data.write import read_column, write_dataset
    from mmsae.io import write_config, write_json

    info_path = Path(cfg.scores) / INFO_FILE
    if not info_path.exists():
        raise FileNotFoundError(f"no {INFO_FILE} in {cfg.scores}: not a `mmsae filter score` output")
    info = json.loads(info_path.read_text())
    by = cfg.by or info["column"]
    source = open_source(info["spec"])
    values = read_column(source, by)
    if all(v is None for v in values):
        raise ValueError(f"column {by!r} has no values in {info['spec']}")
    rows = select_rows(values, cfg.keep, cfg.bottom)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_config(out, cfg)
    written = write_dataset(source, out, {}, rows=rows, fmt=cfg.format or info["format"])
    n_scored = sum(v is not None for v in values)
    result = {**info, "spec": written.spec, "format": written.format, "selected_by": by, "keep": cfg.keep,
              "bottom": cfg.bottom, "n_scored": n_scored, "n_kept": len(rows), "n_without_score": len(values) - n_scored,
              "ties": "broken by record order (the earlier record is kept)", "from": str(cfg.scores)}
    write_json(out / INFO_FILE, result)
    return {**result, "out": str(out)}
