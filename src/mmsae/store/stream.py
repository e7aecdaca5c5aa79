"""Records -> adapter -> residual stream at one layer, batch by batch; the one loop that harvest,
the feature index and online training share. Bad records are handed to `reject` and skipped."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

Rejector = Callable[[int, str, str], None]  # (record index, record id, reason)


@dataclass
class Captured:
    index: int  # record index in the source
    id: str
    record: object  # mmsae.data.Record
    table: object  # TokenTable of the real (unpadded) tokens
    acts_SD: torch.Tensor  # activations of those tokens, on the adapter's device


def load(source, i: int, reject: Rejector):
    """source.record(i), or None after rejecting it; a source bug must not kill a long job."""
    from mmsae.data import Reject

    try:
        return source.record(i)
    except Reject as r:
        reject(i, r.id, r.reason)
    except Exception as e:
        reject(i, f"#{i}", f"{type(e).__name__}: {e}")
    return None


def capture_batches(adapter, source, indices: Iterable[int], layer: int, batch_size: int, reject: Rejector,
                    max_seq_len: int | None = None) -> Iterator[tuple[list[int], list[Captured]]]:
    """Yield (record indices consumed, captured records) per batch, in index order.

    Every index appears in exactly one `consumed` list, whether captured or rejected, so callers can
    checkpoint by the last consumed index."""
    pending: list[tuple[int, object]] = []
    consumed: list[int] = []
    for i in indices:
        consumed.append(i)
        rec = load(source, i, reject)
        if rec is not None:
            pending.append((i, rec))
        if len(pending) == batch_size:
            yield consumed, _capture(adapter, pending, layer, reject, max_seq_len)
            pending, consumed = [], []
    if consumed:
        yield consumed, _capture(adapter, pending, layer, reject, max_seq_len) if pending else []


def _capture(adapter, batch: list, layer: int, reject: Rejector, max_seq_len: int | None) -> list[Captured]:
    """Encode and capture one batch; a sample the processor chokes on is isolated and rejected."""
    from mmsae.models import Prompt

    samples = [Prompt(rec.images, rec.text) for _, rec in batch]
    try:
        enc = adapter.encode(samples)
    except Exception:
        if len(batch) == 1:
            i, rec = batch[0]
            reject(i, rec.id, f"encode failed: {sys.exc_info()[0].__name__}: {sys.exc_info()[1]}")
            return []
        return [c for b in batch for c in _capture(adapter, [b], layer, reject, max_seq_len)]
    acts_BSD = adapter.capture(enc.inputs, layer)
    mask_BS = enc.inputs.get("attention_mask")
    out = []
    for b, (i, rec) in enumerate(batch):
        table = enc.tables[b]
        real_S = np.ones(len(table), bool) if mask_BS is None else mask_BS[b].numpy().astype(bool)
        real = np.flatnonzero(real_S)  # drop batch padding: it depends on the batch, not the sample
        if max_seq_len is not None and len(real) > max_seq_len:
            reject(i, rec.id, f"sequence of {len(real)} tokens > max_seq_len {max_seq_len}")
            continue
        out.append(Captured(i, rec.id, rec, table.take(real), acts_BSD[b, torch.as_tensor(real, device=acts_BSD.device)]))
    return out
