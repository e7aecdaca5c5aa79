"""Records -> adapter -> residual stream at one layer, batch by batch; the one loop that harvest,
the feature index and online training share. Bad records are handed to `reject` and skipped."""

from __future__ import annotations

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
                    max_seq_len: int | None = None,
                    workers: int | None = 0) -> Iterator[tuple[list[int], list[Captured]]]:
    """Yield (record indices consumed, captured records) per batch of `batch_size` consecutive
    indices, in order; rejected records leave their batch short.

    Every index appears in exactly one `consumed` list, whether captured or rejected, so callers can
    checkpoint by the last consumed index. workers > 0 loads and encodes in data-loader workers
    (`prefetch`), with the same batches and results as workers=0."""
    from .prefetch import prepared_batches

    for _, _, prepared in prepared_batches(adapter, source, [list(indices)], batch_size, max_seq_len, workers):
        for r in prepared.rejects:
            reject(*r)
        yield prepared.consumed, forward(adapter, prepared, layer)


def forward(adapter, prepared, layer: int) -> list[Captured]:
    """Run the model over a `Prepared` batch: the residual stream of each record's real tokens."""
    out = []
    for batch, enc in prepared.groups:
        enc = adapter.finish_encode(enc)
        acts_BSD = adapter.capture(enc.inputs, layer)
        mask_BS = enc.inputs.get("attention_mask")
        for b, (i, rec) in enumerate(batch):
            table = enc.tables[b]
            real_S = np.ones(len(table), bool) if mask_BS is None else mask_BS[b].numpy().astype(bool)
            real = np.flatnonzero(real_S)  # drop batch padding: it depends on the batch, not the sample
            out.append(Captured(i, rec.id, rec, table.take(real), _rows(acts_BSD[b], real)))
    return out


MAX_AUTO_STREAMS = 4  # each stream holds a batch in flight; past this, memory grows for little gain


def resolve_streams(streams: int | None, device) -> int:
    """How many forwards run at once (see `forwards`); None: one per torch thread on a CPU (at most
    MAX_AUTO_STREAMS), one on an accelerator, which runs one forward at a time anyway."""
    if streams is None:
        if torch.device(device).type != "cpu":
            return 1
        return max(1, min(MAX_AUTO_STREAMS, torch.get_num_threads()))
    if not isinstance(streams, int) or isinstance(streams, bool) or streams < 1:
        raise ValueError(f"streams must be an integer >= 1, got {streams!r}")
    return streams


def forwards(adapter, batches: Iterable, layer: int, streams: int = 1) -> Iterator[tuple]:
    """(*item, captured) for each item (..., Prepared) of `batches`, in order: `forward` of its batch.

    streams > 1 runs the forwards of consecutive batches at once, each in its own thread with a share
    of torch's intra-op threads (at most `streams` batches in flight). On a CPU whose cores also load,
    encode and store the data, single-threaded forwards side by side beat one forward on a team of
    threads: the team stalls at every operation while one of its cores runs the data worker or the
    writer, and a small model's operations are too short for a team to pay off anyway (2 cores,
    `benchmarks/harvest.py --streams 1` vs `2`: harvest/capture 0.61 -> 0.87 on the zoo subject).
    The captures are the same either way: each forward is the model on its own batch."""
    if streams <= 1:
        for item in batches:
            yield (*item, forward(adapter, item[-1], layer))
        return
    import collections
    from concurrent.futures import ThreadPoolExecutor

    threads = max(1, torch.get_num_threads() // streams)
    pending: collections.deque = collections.deque()
    with ThreadPoolExecutor(streams, thread_name_prefix="mmsae-forward",
                            initializer=torch.set_num_threads, initargs=(threads,)) as pool:
        for item in batches:
            pending.append((item, pool.submit(forward, adapter, item[-1], layer)))
            if len(pending) >= streams:
                item, done = pending.popleft()
                yield (*item, done.result())
        while pending:
            item, done = pending.popleft()
            yield (*item, done.result())


def _rows(acts_SD: torch.Tensor, real: np.ndarray) -> torch.Tensor:
    """acts_SD[real]: a slice when the real tokens are one run (right padding), so that no index
    tensor goes to the device (a pageable upload waits for the forward already queued)."""
    if len(real) and real[-1] - real[0] + 1 == len(real):
        return acts_SD[int(real[0]):int(real[-1]) + 1]
    return acts_SD[torch.as_tensor(real, device=acts_SD.device)]
