"""`build_index`: stream a data source through the model (early exit at the SAE's layer) and the SAE,
keep the running top-N per feature, and write the DuckDB index.

Resume: records are processed in chunks of `chunk_records`; after each chunk the running state is
saved atomically (torch.save to a temp file + os.replace) with the next record index, and the chunk's
sample/image geometry goes to its own Parquet file. A killed run restarts at the last saved chunk
with the same batches, so it ends with the same index as an uninterrupted one. The DuckDB file is
written under a temporary name and renamed into place at the end.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from mmsae.defaults import default_model
from mmsae.io import JsonlAppender, write_config
from mmsae.models.table import IMAGE

from .db import CHUNK_SCHEMAS, INDEX_FILE, chunk_file, write_index
from .read import open_index
from .state import SELECTIONS, IndexState, image_key, key_problem, split_image_key, use_selection

CONFIG_FILE = "index.json"
REJECTS_FILE = "rejects.jsonl"
STATE_DIR = "state"
STATE_FILE = "state.pt"
RANK_BY = ("max", "mean")


@dataclass
class IndexConfig:
    """Top images (with patch maps), top text contexts and statistics of every SAE feature -> OUT/index.duckdb."""

    out: str
    """index directory: index.duckdb, rejects.jsonl, index.json (and state/ while running); rerun to resume"""
    sae: str
    """SAE checkpoint folder (mmsae, SAELens or sparsify)"""
    model: str = field(default_factory=default_model)
    """model directory (default: the zoo subject)"""
    data: str = "world:n=1000,seed=0"
    """data source: world:n=N,seed=S | a folder, .jsonl, hf: or .parquet path"""
    prompt: str | None = None
    """prompt template with <image> and {text} (None: the source's default, "<image>" for images)"""
    layer: int | None = None
    """decoder block, 0-indexed (None: the SAE's recorded hook layer)"""
    top_n: int = 20
    """top images kept per feature"""
    rank_by: str = "max"
    """rank images by the max or the mean over their tokens: max | mean"""
    n_text: int = 20
    """top text tokens kept per feature (0: none)"""
    context_before: int = 8
    """context tokens shown before a text token"""
    context_after: int = 4
    """context tokens shown after a text token"""
    batch_size: int = 8
    """sequences per forward pass"""
    chunk_records: int = 256
    """records between two saves of the running state (the unit of resume)"""
    sae_batch_tokens: int = 4096
    """tokens per SAE encode call (TopK builds a dense [tokens, F] matrix)"""
    selection_dtype: str = "auto"
    """TopK kind: dtype of the dense [tokens, F] product that only selects each token's k latents, whose values are
    then computed exactly in float32: float32 | bfloat16 (k + margin candidates, exact values pick the k) | int8 (CPU;
    float32's latents, certified) | auto (as training's: bfloat16 where the device multiplies it natively, else int8
    where a probe finds it faster, else float32); the same index for each, so not part of the identity"""
    max_records: int | None = None
    """index only the first N records"""
    # HarvestConfig's six run options again: a base class would list them first in --help; device ignores LOCAL_RANK
    max_seq_len: int | None = None
    """reject longer sequences"""
    max_image_pixels: int = 64_000_000
    """reject larger images"""
    device: str = "auto"
    """auto (cuda when available, else cpu) | cpu | cuda | cuda:N"""
    model_dtype: str | None = None
    """load the model in this dtype (e.g. bfloat16 on GPU; None keeps the checkpoint's)"""
    progress: bool = True
    """show a progress bar"""
    workers: int | None = None
    """data-loader processes encoding ahead (0: in process; None: cores - 1, at most 4); not part of the identity"""
    streams: int | None = None
    """forward passes run at once (None: one per torch thread on CPU, at most 4; 1 on GPU); not part of the identity"""
    update_queue: int = 2
    """batches queued for the SAE/top-N thread; bounds the activations in flight"""

    def identity(self) -> dict:
        """What must match for a rerun to resume into (or reuse) the same directory (not `workers`,
        `streams`, `update_queue` or `selection_dtype`: any value gives the same index)."""
        skip = ("out", "sae", "model", "device", "progress", "workers", "streams", "update_queue", "selection_dtype")
        return {k: v for k, v in asdict(self).items() if k not in skip}


def _check_config(cfg: IndexConfig) -> None:
    if cfg.rank_by not in RANK_BY:
        raise ValueError(f"rank_by must be one of {RANK_BY}, got {cfg.rank_by!r}")
    for name in ("top_n", "batch_size", "chunk_records", "sae_batch_tokens", "update_queue"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    for name in ("n_text", "context_before", "context_after"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    from mmsae.store.prefetch import resolve_workers
    from mmsae.store.stream import resolve_streams

    resolve_workers(cfg.workers)
    resolve_streams(cfg.streams, "cpu")
    if cfg.selection_dtype not in SELECTIONS:
        raise ValueError(f"selection_dtype must be one of {SELECTIONS}, got {cfg.selection_dtype!r}")
    if cfg.model_dtype is not None and cfg.model_dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"model_dtype must be float32, bfloat16 or float16, got {cfg.model_dtype!r}")


def check_model_and_sae(cfg: IndexConfig, sae) -> int:
    """The layer to capture; clear errors for a width or layer mismatch, before the model is loaded."""
    from mmsae.models.registry import check_layer_range, model_shape

    path = Path(cfg.model)
    d_model, n_layers = model_shape(path)
    if sae.cfg.d_in != d_model:
        raise ValueError(f"SAE {cfg.sae} has d_in {sae.cfg.d_in} but model {path} has d_model {d_model}: "
                         "the SAE was trained on another model")
    hook = sae.cfg.hook_layer
    if cfg.layer is None and hook is None:
        raise ValueError(f"SAE {cfg.sae} records no hook layer; pass the layer it was trained on (--layer)")
    if cfg.layer is not None and hook is not None and cfg.layer != hook:
        raise ValueError(f"layer {cfg.layer} was requested but SAE {cfg.sae} was trained on layer {hook}")
    layer = hook if cfg.layer is None else cfg.layer
    check_layer_range(path, n_layers, layer)
    return int(layer)


def _check_resume(root: Path, identity: dict) -> None:
    path = root / CONFIG_FILE
    if path.exists():
        before = json.loads(path.read_text())
        if before != identity:
            diff = {k: (before.get(k), identity.get(k)) for k in sorted(set(before) | set(identity))
                    if before.get(k) != identity.get(k)}
            raise ValueError(f"{root} holds an index made with other settings {diff}; use a new --out")
    else:
        from mmsae.io import write_json

        write_json(path, identity)


class Rejects(JsonlAppender):
    """rejects.jsonl, truncated on resume to what the last saved chunk had written."""

    def __call__(self, index: int, sample_id: str, reason: str) -> None:
        self.write({"index": index, "id": sample_id, "reason": reason})


class ChunkBuffer:
    """Samples and image geometry of the records of one chunk; written (only the rows still
    referenced by some top-N) to the chunk's Parquet files when the chunk ends."""

    def __init__(self):
        self.rows = {t: [] for t in CHUNK_SCHEMAS}

    def add(self, captured: list) -> None:
        for c in captured:
            t = c.table
            self.rows["samples"].append({"sample": c.index, "sample_id": c.id, "n_images": len(c.record.images),
                                         "text": c.record.text})
            for m, image in enumerate(c.record.images):
                sel = np.flatnonzero((t.modality == IMAGE) & (t.image_index == m))
                self.rows["images"].append({"sample": c.index, "image_index": m, "width": image.width,
                                            "height": image.height, "n_patches": len(sel)})
                self.rows["patches"].append((c.index, m, t.tile[sel], t.patch_row[sel], t.patch_col[sel], t.box[sel]))

    def write(self, state_dir: Path, chunk: int, image_keys: np.ndarray, text_samples: np.ndarray) -> None:
        from mmsae.store.files import atomic_path

        keys = set(image_keys.tolist())
        samples = {int(split_image_key(k)[0]) for k in keys} | set(text_samples.tolist())
        tables = {
            "samples": [r for r in self.rows["samples"] if r["sample"] in samples],
            "images": [r for r in self.rows["images"] if int(image_key(r["sample"], r["image_index"])) in keys],
        }
        cols: dict[str, list] = {n: [] for n in CHUNK_SCHEMAS["patches"].names}
        for sample, m, tile, row, col, box in self.rows["patches"]:
            if int(image_key(sample, m)) not in keys:
                continue
            n = len(tile)
            for name, arr in (("sample", np.full(n, sample)), ("image_index", np.full(n, m)), ("ord", np.arange(n)),
                              ("tile", tile), ("patch_row", row), ("patch_col", col), ("x0", box[:, 0]),
                              ("y0", box[:, 1]), ("x1", box[:, 2]), ("y1", box[:, 3])):
                cols[name].append(arr)
        for name, schema in CHUNK_SCHEMAS.items():
            if name == "patches":
                arrays = [np.concatenate(cols[f.name]) if cols[f.name] else np.zeros(0) for f in schema]
                table = pa.table([pa.array(a).cast(f.type) for a, f in zip(arrays, schema)], schema=schema)
            else:
                table = pa.Table.from_pylist(tables[name], schema=schema)
            with atomic_path(chunk_file(state_dir, name, chunk)) as tmp:
                pq.write_table(table, tmp)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_index(cfg: IndexConfig, on_chunk: Callable[[int, int], None] | None = None) -> Path:
    """Build (or resume, or reuse) the index in cfg.out; returns the path of index.duckdb.

    `on_chunk(chunk, next_record)` is called after each chunk's state is saved (progress hooks; an
    exception from it stops the build, which a rerun resumes)."""
    from mmsae.data import open_source
    from mmsae.sae import SAE
    from mmsae.store.files import model_fingerprint

    _check_config(cfg)
    if not Path(cfg.sae).exists():
        raise FileNotFoundError(f"no SAE checkpoint at {cfg.sae}")
    sae = SAE.from_pretrained(cfg.sae)
    layer = check_model_and_sae(cfg, sae)
    source = open_source(cfg.data, prompt=cfg.prompt, max_pixels=cfg.max_image_pixels)
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    identity = {**cfg.identity(), "layer": layer, "model_fingerprint": model_fingerprint(cfg.model),
                "sae_fingerprint": model_fingerprint(cfg.sae), "source": source.describe()}
    _check_resume(root, identity)
    write_config(root, cfg)
    final, state_dir = root / INDEX_FILE, root / STATE_DIR
    if final.exists():  # complete; explain/score may have added rows since, so never rebuild
        open_index(final).close()  # ...but an index of another schema version is not returned as if it were fine
        shutil.rmtree(state_dir, ignore_errors=True)
        return final
    state_dir.mkdir(exist_ok=True)
    for p in list(root.glob(".*.tmp-*")) + list(state_dir.glob(".*.tmp-*")):
        p.unlink(missing_ok=True)  # left by a killed run; their work is redone

    device = _device(cfg.device)
    state = IndexState(sae.cfg.n_latents, cfg.top_n, cfg.n_text, cfg.rank_by,
                       (cfg.context_before, cfg.context_after), device)
    saved = torch.load(state_dir / STATE_FILE, weights_only=True) if (state_dir / STATE_FILE).exists() else None
    next_record, reject_bytes = 0, 0
    if saved is not None:
        state.load_state_dict(saved["state"])
        next_record, reject_bytes = int(saved["next_record"]), int(saved["reject_bytes"])
    n_records = len(source) if cfg.max_records is None else min(len(source), cfg.max_records)
    rejects = Rejects(root / REJECTS_FILE, reject_bytes)
    try:
        if next_record < n_records:
            from mmsae.models import load_adapter

            dtype = getattr(torch, cfg.model_dtype) if cfg.model_dtype else None
            adapter = load_adapter(cfg.model, dtype=dtype, device=str(device))
            adapter.check_layer(layer)
            sae = sae.to(device).eval()
            use_selection(sae, cfg.selection_dtype, device)
            _run(cfg, adapter, sae, source, layer, state, state_dir, rejects, next_record, n_records, on_chunk)
        n_rejects = sum(1 for _ in open(root / REJECTS_FILE, "rb"))
    finally:
        rejects.close()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg.model)
    relpath = {f"{k}_relpath": os.path.relpath(Path(p).resolve(), root.resolve()) for k, p in (("model", cfg.model),
                                                                                               ("sae", cfg.sae))}
    meta = {"model": str(cfg.model), "model_fingerprint": identity["model_fingerprint"],
            "sae": str(cfg.sae), "sae_fingerprint": identity["sae_fingerprint"], **relpath, "layer": layer,
            "data": cfg.data,
            "prompt": source.prompt, "max_pixels": cfg.max_image_pixels, "source": identity["source"], "top_n": cfg.top_n,
            "rank_by": cfg.rank_by,
            "n_text": cfg.n_text, "context": [cfg.context_before, cfg.context_after], "n_records": n_records,
            "n_rejects": n_rejects, "n_latents": sae.cfg.n_latents, "sae_kind": sae.cfg.kind, "d_in": sae.cfg.d_in,
            "k": sae.cfg.k, "image_size": identity["source"].get("image_size"),
            "special_tokens": "counted in n_fires, frequency and n_special_fires; not in image_share, "
                              "examples (image tokens only) or text_contexts (text tokens only)",
            **state.counts}
    tmp = root / f".{INDEX_FILE}.tmp-{os.getpid()}"
    write_index(tmp, meta, state, state_dir, lambda ids: tokenizer.batch_decode(ids))
    os.replace(tmp, final)
    shutil.rmtree(state_dir, ignore_errors=True)
    return final


def _run(cfg, adapter, sae, source, layer, state, state_dir, rejects, start, n_records, on_chunk) -> None:
    """The forward runs here; records are loaded and encoded ahead in workers, and the SAE encode,
    running top-N and the chunk saves run behind in an update thread (`_Updater`), one batch apart."""
    import time
    from itertools import chain

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from mmsae.store.background import Background
    from mmsae.store.prefetch import prepared_batches
    from mmsae.store.stream import forwards, resolve_streams

    R = cfg.chunk_records
    segments = [range(lo, min(lo + R, n_records)) for lo in range(start, n_records, R)]
    batches = prepared_batches(adapter, source, segments, cfg.batch_size, cfg.max_seq_len, cfg.workers,
                               pin_memory=adapter.device.type == "cuda")
    first = next(batches, None)  # starts the workers before this process has threads of its own (fork)
    columns = [TextColumn("index"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[tps]} tok/s")]
    updater = _Updater(cfg, sae, state, state_dir, rejects, on_chunk)
    with Progress(*columns, disable=not cfg.progress) as bar, \
            Background(updater, maxsize=cfg.update_queue, name="mmsae-index-update") as background:
        task = bar.add_task("records", total=n_records, completed=start, tps="-")
        t0, n_tok = time.perf_counter(), 0
        items = chain([first] if first else [], batches)
        for s, last, prepared, captured in forwards(adapter, items, layer, resolve_streams(cfg.streams, adapter.device)):
            background.put((segments[s], last, prepared.rejects, captured))
            n_tok += sum(len(c.table) for c in captured)
            bar.update(task, advance=len(prepared.consumed),
                       tps=f"{n_tok / max(time.perf_counter() - t0, 1e-9):,.0f}")


class _Updater:
    """The update thread's handler: fold a batch into the running state; after a chunk's last batch
    write its Parquet files, then save the state with the next record (the resume point), then call
    on_chunk. The resume point only moves once everything before it is on disk."""

    def __init__(self, cfg: IndexConfig, sae, state: IndexState, state_dir: Path, rejects: Rejects, on_chunk):
        self.cfg, self.sae, self.state, self.state_dir = cfg, sae, state, state_dir
        self.rejects, self.on_chunk = rejects, on_chunk
        self.buffer: ChunkBuffer | None = None

    def __call__(self, item) -> None:
        from mmsae.store.files import atomic_path

        records, last, rejected, captured = item
        if self.buffer is None:
            self.buffer = ChunkBuffer()
        for r in rejected:
            self.rejects(*r)
        for c in captured:
            if key_problem(c) is not None:
                self.rejects(c.index, c.id, key_problem(c))
        captured = [c for c in captured if key_problem(c) is None]
        self.state.add_batch(captured, self.sae, self.cfg.sae_batch_tokens)
        self.buffer.add(captured)
        if not last:
            return
        chunk, hi = records.start // self.cfg.chunk_records, records.stop
        self.buffer.write(self.state_dir, chunk, *self.state.referenced())
        self.buffer = None
        saved = {"state": self.state.state_dict(), "next_record": hi, "reject_bytes": self.rejects.sync()}
        with atomic_path(self.state_dir / STATE_FILE) as tmp:
            torch.save(saved, tmp)
        if self.on_chunk is not None:
            self.on_chunk(chunk, hi)


def run_index(cfg: IndexConfig) -> dict:
    """`mmsae index`: build (or resume, or reuse) the index; returns its path and counts."""
    from .read import feature_counts, read_meta

    path = build_index(cfg)
    con = open_index(path)
    try:
        meta = read_meta(con)
        live, with_examples = feature_counts(con)
    finally:
        con.close()
    return {"index": str(path), "n_latents": meta["n_latents"], "fired": live, "with_examples": with_examples,
            "n_tokens": meta["n_tokens"], "n_samples": meta["n_samples"], "n_rejects": meta["n_rejects"]}


def format_index(result: dict, cfg: IndexConfig) -> str:
    r = result
    return (f"{r['n_latents']:,} features ({r['fired']:,} fired, {r['with_examples']:,} with top images) over "
            f"{r['n_tokens']:,} tokens of {r['n_samples']:,} samples, {r['n_rejects']} rejected -> {r['index']}")
