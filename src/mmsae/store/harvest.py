"""`harvest`: run a model over a data source and store the residual stream after one block."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from mmsae.defaults import default_model
from mmsae.io import write_config

from .files import HARVEST_CONFIG, clean_temp_files, model_fingerprint, write_json
from .manifest import finalize
from .shard import DTYPES, SELECTIONS, ShardBuilder, read_meta, selected


@dataclass
class HarvestConfig:
    """Capture the residual stream after decoder block LAYER into a resumable store (rerun to resume).

    Under torchrun each rank harvests every WORLD_SIZE-th shard and rank 0 merges the manifest."""

    out: str
    """store directory (rerun the same command to resume)"""
    layer: int
    """decoder block L whose output is captured, 0-indexed (papers' 'layer L+1')"""
    model: str = field(default_factory=default_model)
    """model directory (default: the zoo subject)"""
    data: str = "world:n=1000,seed=0"
    """data source: world:n=N,seed=S | a folder, .jsonl, hf: or .parquet path"""
    prompt: str | None = None
    """prompt template with <image> and {text} (None: the source's default, "<image>" or "{text}")"""
    tokens: str = "all"
    """which tokens become training rows: all | image | text"""
    include_special: bool = False
    """also store BOS/image-start/newline... rows (they are always in the token table)"""
    dtype: str = "bfloat16"
    """stored activation dtype: bfloat16 | float32 | float16"""
    batch_size: int = 8
    """sequences per forward pass"""
    records_per_shard: int = 128
    """records per shard, the unit of resume and of rank sharding; a shard is held in RAM before its atomic
    write (rows x d_in x 2 bytes: 128 LLaVA-NeXT-8B records ~ 2.6 GB), so lower it for long sequences"""
    max_records: int | None = None
    """harvest only the first N records"""
    # max_seq_len .. workers: repeated in IndexConfig, which says why they are not a shared base class
    max_seq_len: int | None = None
    """reject longer sequences (rejected, not truncated: images would be cut)"""
    max_image_pixels: int = 64_000_000
    """reject larger images"""
    device: str = "auto"
    """auto (cuda:LOCAL_RANK when available, else cpu) | cpu | cuda:N"""
    model_dtype: str | None = None
    """load the model in this dtype (e.g. bfloat16 on GPU; None keeps the checkpoint's)"""
    progress: bool = True
    """show a progress bar"""
    workers: int | None = None
    """data-loader processes that load and encode records while the model runs (0: in process; None: one per
    core but the forward's, at most 4); not part of the store's identity: any value gives the same bytes"""
    streams: int | None = None
    """forward passes run at once, each on its share of torch's threads (None: one per thread on CPU, at most
    4; 1 on GPU); not part of the store's identity: any value gives the same bytes"""
    write_queue: int = 2
    """batches handed to the shard-writer thread ahead of it; bounds the activations held in flight"""

    def identity(self) -> dict:
        """What must match for a rerun to resume into the same store."""
        keep = ("layer", "data", "prompt", "tokens", "include_special", "dtype", "batch_size",
                "records_per_shard", "max_records", "max_seq_len", "max_image_pixels", "model_dtype")
        return {k: v for k, v in asdict(self).items() if k in keep}


def _dist() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        # gloo is enough: ranks exchange nothing but barriers; each writes its own shards.
        torch.distributed.init_process_group("gloo")
    if torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def _check_model(cfg: HarvestConfig) -> None:
    """Fail on a missing model, unknown family or bad layer before loading any weights."""
    from mmsae.models.registry import model_shape

    model_shape(cfg.model, cfg.layer)
    if cfg.tokens not in SELECTIONS:
        raise ValueError(f"tokens must be one of {SELECTIONS}")
    if cfg.dtype not in DTYPES or (cfg.model_dtype is not None and cfg.model_dtype not in DTYPES):
        raise ValueError(f"dtype must be one of {tuple(DTYPES)}")
    for name in ("batch_size", "records_per_shard", "write_queue"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)!r}")
    from .prefetch import resolve_workers
    from .stream import resolve_streams

    resolve_workers(cfg.workers)
    resolve_streams(cfg.streams, "cpu")


def _check_resume(root: Path, identity: dict, rank: int) -> None:
    path = root / HARVEST_CONFIG
    if path.exists():
        before = json.loads(path.read_text())
        if before != identity:
            diff = {k: (before.get(k), identity.get(k)) for k in set(before) | set(identity)
                    if before.get(k) != identity.get(k)}
            raise ValueError(f"{root} holds a store made with other settings {diff}; use a new --out")
    elif rank == 0:
        write_json(path, identity)


def harvest(cfg: HarvestConfig) -> dict | None:
    """Harvest into cfg.out; resumes a killed run. Returns the manifest (on rank 0)."""
    from mmsae.data import open_source
    from mmsae.models import load_adapter

    _check_model(cfg)
    source = open_source(cfg.data, prompt=cfg.prompt, max_pixels=cfg.max_image_pixels)
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    rank, world = _dist()
    # A rerun resumes only into a store made by the same settings, model and data (same size).
    identity = {**cfg.identity(), "model_fingerprint": model_fingerprint(cfg.model), "source": source.describe()}
    _check_resume(root, identity, rank)
    if rank == 0:
        clean_temp_files(root)  # before the barrier: no other rank has started writing yet
    _barrier()
    n_records = len(source) if cfg.max_records is None else min(len(source), cfg.max_records)
    R = cfg.records_per_shard
    n_shards = (n_records + R - 1) // R
    todo = [k for k in range(rank, n_shards, world) if read_meta(root, k) is None]
    if todo:
        device = cfg.device
        if device == "auto":
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"
        dtype = DTYPES[cfg.model_dtype] if cfg.model_dtype else None
        adapter = load_adapter(cfg.model, dtype=dtype, device=device)
        adapter.check_layer(cfg.layer)
        _run(cfg, adapter, source, root, todo, n_records, rank)
    _barrier()
    if rank != 0:
        return None
    write_config(root, cfg)
    return finalize(root, cfg, identity, source, n_shards, n_records, world,
                    command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]))


def run_harvest(cfg: HarvestConfig) -> dict | None:
    """`mmsae harvest`: harvest (or resume) and return the store's counts (None on ranks other than 0)."""
    manifest = harvest(cfg)
    if manifest is None:
        return None
    keep = ("n_rows", "d_in", "n_samples", "n_rejects", "counts")
    return {"out": str(cfg.out), **{k: manifest[k] for k in keep}}


def format_harvest(result: dict | None, cfg: HarvestConfig) -> str:
    if result is None:  # a rank other than 0 of a torchrun harvest: rank 0 reports
        return ""
    rows, tokens = result["counts"]["rows"], result["counts"]["tokens"]
    return (f"{result['n_rows']:,} rows (d_in {result['d_in']}) from {result['n_samples']:,} samples, "
            f"{result['n_rejects']} rejected -> {result['out']}\n"
            f"  rows   text {rows['text']:,}  image {rows['image']:,}  special {rows['special']:,}\n"
            f"  tokens text {tokens['text']:,}  image {tokens['image']:,}  special {tokens['special']:,}")


def _run(cfg, adapter, source, root: Path, todo: list[int], n_records: int, rank: int) -> None:
    """The forward runs here; loading/encoding run ahead in workers, shard assembly and writes behind
    in a writer thread. A shard's commit marker is written (last) by that thread once its files are
    durable, so a kill -9 anywhere leaves only whole shards behind."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from itertools import chain

    from .background import Background
    from .prefetch import prepared_batches
    from .stream import forwards, resolve_streams

    R = cfg.records_per_shard
    segments = [range(k * R, min((k + 1) * R, n_records)) for k in todo]
    batches = prepared_batches(adapter, source, segments, cfg.batch_size, cfg.max_seq_len, cfg.workers,
                               pin_memory=adapter.device.type == "cuda")
    first = next(batches, None)  # starts the workers before this process has threads of its own (fork)
    columns = [TextColumn("harvest"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[tps]} tok/s")]
    writer = _ShardWriter(cfg, root, adapter.d_model)
    with Progress(*columns, disable=not cfg.progress or rank != 0, transient=False) as bar, \
            Background(writer, maxsize=cfg.write_queue, name="mmsae-shard-writer", threads=1) as background:
        task = bar.add_task("records", total=sum(len(s) for s in segments), tps="-")
        t0, n_tok = _now(), 0
        items = chain([first] if first else [], batches)
        for s, last, prepared, captured in forwards(adapter, items, cfg.layer, resolve_streams(cfg.streams, adapter.device)):
            background.put((todo[s], segments[s], last, prepared.rejects, captured))
            n_tok += sum(len(c.table) for c in captured)
            bar.update(task, tps=f"{n_tok / max(_now() - t0, 1e-9):,.0f}", advance=len(prepared.consumed))


class _ShardWriter:
    """The writer thread's handler: one shard at a time, written when its last batch arrives."""

    def __init__(self, cfg: HarvestConfig, root: Path, d_in: int):
        self.cfg, self.root, self.d_in = cfg, root, d_in
        self.dtype = DTYPES[cfg.dtype]
        self.shard: ShardBuilder | None = None

    def __call__(self, item) -> None:
        k, records, last, rejects, captured = item
        if self.shard is None:
            self.shard = ShardBuilder(k, (records.start, records.stop), self.d_in)
        for r in rejects:
            self.shard.reject(*r)
        self.shard.add_batch(captured, self.cfg.tokens, self.cfg.include_special, self.dtype)
        if last:
            self.shard.write(self.root, self.dtype)
            self.shard = None


def _now() -> float:
    import time

    return time.perf_counter()
