"""Records -> encoded batches in data-loader workers, ahead of the model (torch DataLoader style).

Each batch is the next `batch_size` record indices of a segment (a shard, an index chunk); a worker
loads them (scene rendering, image decoding), runs the processor and the token table
(`Adapter.prepare`, on a weight-free copy of the adapter), rejects what it cannot use and returns a
`Prepared` batch. The main process only runs the forward. With workers=0 the same code runs in
process, so the batches, and everything made from them, are the same bytes whatever the workers.
At most workers x PREFETCH batches are in flight, so memory does not grow with the data.
"""

from __future__ import annotations

import copy
import functools
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

PREFETCH = 2  # batches each worker prepares ahead (DataLoader's prefetch_factor)
MAX_AUTO_WORKERS = 4  # more rarely helps: one process per batch in flight already hides the encode

Reject = tuple[int, str, str]  # (record index, record id, reason)


def default_workers() -> int:
    """One core is the forward's; workers get the rest (0 on one core: there is nothing to overlap with)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(0, min(MAX_AUTO_WORKERS, cores - 1))


def resolve_workers(workers: int | None) -> int:
    if workers is None:
        return default_workers()
    if not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be an integer >= 0 (0: load and encode in process), got {workers!r}")
    return workers


@dataclass
class Prepared:
    """One batch, ready for the forward: `groups` are the forward passes it needs (one, unless the
    processor failed on the batch and its records were encoded one by one)."""

    consumed: list[int]  # every index of the batch, captured or rejected
    rejects: list[Reject] = field(default_factory=list)  # in the order the in-process loop met them
    groups: list[tuple[list, object]] = field(default_factory=list)  # ([(index, Record)], Encoded)

    def __getstate__(self) -> dict:
        """Small tensors travel inside the pickle (one pipe read); only big ones go through shared
        memory, whose per-tensor file-descriptor hand-over costs more than copying a few hundred KB."""
        state = dict(self.__dict__)
        state["groups"] = [(batch, _Packed(enc)) for batch, enc in self.groups]
        return state

    def __setstate__(self, state: dict) -> None:
        state["groups"] = [(batch, packed.unpack()) for batch, packed in state["groups"]]
        self.__dict__.update(state)

    def pin_memory(self) -> Prepared:
        """Called by the DataLoader's pin thread (CUDA): pinned inputs upload without a stream sync."""
        for _, enc in self.groups:
            enc.inputs = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in enc.inputs.items()}
        return self


INLINE_BYTES = 1 << 21  # tensors up to this size are pickled by value between processes


class _Packed:
    def __init__(self, enc):
        self.enc = enc
        self.inline = {}
        for k, v in enc.inputs.items():
            if isinstance(v, torch.Tensor) and v.numel() * v.element_size() <= INLINE_BYTES and v.dtype != torch.bfloat16:
                self.inline[k] = v.numpy()
        if self.inline:  # a shallow copy: the worker's own Encoded stays as it was
            self.enc = copy.copy(enc)
            self.enc.inputs = {k: v for k, v in enc.inputs.items() if k not in self.inline}

    def unpack(self):
        if self.inline:
            self.enc.inputs = {**self.enc.inputs, **{k: torch.from_numpy(v) for k, v in self.inline.items()}}
        return self.enc


class _Records(torch.utils.data.Dataset):
    """Item i: (i, the Record or None, the rejects loading it gave)."""

    def __init__(self, source):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int):
        from .stream import load

        rejects: list[Reject] = []
        return i, load(self.source, i, lambda *r: rejects.append(r)), rejects


class _Encode:
    """The collate: encode the loaded records of one batch (in the worker that loaded them)."""

    def __init__(self, adapter, max_seq_len: int | None):
        self.adapter = adapter
        self.max_seq_len = max_seq_len

    def __call__(self, items: list) -> Prepared:
        out = Prepared([i for i, _, _ in items])
        for _, _, rejects in items:
            out.rejects += rejects
        loaded = [(i, rec) for i, rec, _ in items if rec is not None]
        out.groups = self._groups(loaded, out.rejects)
        return out

    def _groups(self, batch: list, rejects: list[Reject]) -> list:
        """Encode `batch`; a record the processor chokes on is isolated and rejected, too-long
        sequences are rejected before the forward (and the rest re-encoded without them)."""
        from mmsae.models import Prompt

        if not batch:
            return []
        try:
            enc = self.adapter.prepare([Prompt(rec.images, rec.text) for _, rec in batch])
        except Exception:
            if len(batch) == 1:
                i, rec = batch[0]
                rejects.append((i, rec.id, f"encode failed: {sys.exc_info()[0].__name__}: {sys.exc_info()[1]}"))
                return []
            return [g for b in batch for g in self._groups([b], rejects)]
        if self.max_seq_len is not None:
            mask_BS = enc.inputs.get("attention_mask")
            n_B = [len(t) for t in enc.tables] if mask_BS is None else mask_BS.sum(1).tolist()
            long = {b for b, n in enumerate(n_B) if n > self.max_seq_len}
            for b in sorted(long):
                i, rec = batch[b]
                rejects.append((i, rec.id, f"sequence of {int(n_B[b])} tokens > max_seq_len {self.max_seq_len}"))
            if long:
                return self._groups([x for b, x in enumerate(batch) if b not in long], rejects)
        return [(batch, enc)]


def plan(segments: Sequence[Sequence[int]], batch_size: int) -> list[tuple[int, bool, list[int]]]:
    """(segment number, last batch of its segment?, record indices) of every batch, in order;
    a batch never spans two segments, so a segment's batches do not depend on its neighbours."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    out = []
    for s, seg in enumerate(segments):
        seg = list(seg)
        for lo in range(0, len(seg), batch_size):
            out.append((s, lo + batch_size >= len(seg), seg[lo:lo + batch_size]))
    return out


def prepared_batches(adapter, source, segments: Sequence[Sequence[int]], batch_size: int,
                     max_seq_len: int | None = None, workers: int | None = 0,
                     pin_memory: bool = False) -> Iterator[tuple[int, bool, Prepared]]:
    """(segment number, last of its segment?, Prepared) per batch, in order. The workers start on
    the first next(); start it before the caller's own threads (workers are forked where possible)."""
    workers = resolve_workers(workers)
    batches = plan(segments, batch_size)
    if not batches:
        return
    records, encode = _Records(source), _Encode(adapter if workers == 0 else adapter.model_free(), max_seq_len)
    if workers == 0:
        for s, last, idx in batches:
            yield s, last, encode([records[i] for i in idx])
        return
    import multiprocessing

    # fork (Linux): workers start in milliseconds and share the source's read-only state; elsewhere the
    # weight-free adapter and the source are pickled instead.
    context = "fork" if sys.platform.startswith("linux") else None
    loader = torch.utils.data.DataLoader(records, batch_sampler=[idx for _, _, idx in batches], collate_fn=encode,
                                         num_workers=min(workers, len(batches)), prefetch_factor=PREFETCH,
                                         multiprocessing_context=context, pin_memory=pin_memory,
                                         worker_init_fn=functools.partial(_die_with_parent, os.getpid()))
    for (s, last, _), prepared in zip(batches, loader):
        yield s, last, prepared


def _die_with_parent(parent_pid: int, _worker_id: int) -> None:
    """Make a worker die with the process that started it (Linux). After a kill -9 of that process a
    DataLoader worker notices and tries to exit, but its queue's feeder thread blocks for good writing
    to a pipe whose read end the worker itself still holds: the worker would linger, holding its
    memory. PR_SET_PDEATHSIG has the kernel kill it instead."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # no prctl in this libc: keep the DataLoader's own watchdog
        return
    if os.getppid() != parent_pid:  # the parent died before the call above took effect
        os._exit(1)
