"""Online training data: activations harvested on the fly (nothing on disk) as a resumable source.

The selected tokens of records 0, 1, 2, ... (record g is the source's record g mod len, so several
epochs are one stream) are cut into windows of exactly `window_tokens` tokens, a multiple of the
batch size; a record may straddle two windows. Each window is shuffled by a generator seeded with
(seed, window) and emitted as window_tokens / batch_size batches: nothing carries over between
windows, so a position in the stream is four integers, (window, batches emitted, first record of
the window, tokens of that record that belong to earlier windows). A resumed source re-captures that
one window (at most `window_tokens` tokens plus one capture group of records) and skips the batches
already emitted: it yields the very batches, bit for bit, that an uninterrupted run would have.
Records go through the model in fixed groups [k·C, (k+1)·C) of record numbers (C =
`capture_batch_size`), so padding, and with it every activation, does not depend on where a run
started. Only a final partial window (when `epochs` ends the stream) drops its last < batch_size tokens.

Normalisation: the store path knows E‖x‖ from its manifest; online, `mean_norm()` estimates it over
the first window's tokens (window 0 is kept, not captured twice) and `training_defaults` puts
√d / E‖x‖ into the TrainConfig of a fresh run; the trainer stores it in its checkpoint, so a resumed
run uses the same value. Under torchrun every rank computes the same stream and trains on its slice.
Memory: one window of float32 tokens on the model's device (65,536 x 4096 x 4 B = 1 GiB for an
8B LLaVA) plus the records of one capture group.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)


class _Cycled:
    """Record g of the stream is the source's record g mod len (epochs back to back)."""

    def __init__(self, source: Any):
        self.source, self.n = source, len(source)

    def record(self, g: int):
        return self.source.record(g % self.n)


@dataclass
class _Window:
    index: int
    record: int  # first record number of the window
    offset: int  # selected tokens of that record that belong to earlier windows
    acts_ND: Tensor | None = None
    next_record: int = 0
    next_offset: int = 0

    def n_tokens(self) -> int:
        return 0 if self.acts_ND is None else int(self.acts_ND.shape[0])


class OnlineBatches:
    """Shuffled [batch_size, d_model] batches of a model's residual stream after block `layer`,
    captured while training; resumable (see the module docstring)."""

    rank_aware = False

    def __init__(self, adapter: Any, source: Any, layer: int, batch_size: int, seed: int = 0, tokens: str = "all",
                 include_special: bool = False, window_tokens: int = 65_536, capture_batch_size: int = 8,
                 max_seq_len: int | None = None, epochs: int | None = None):
        from mmsae.store import SELECTIONS

        adapter.check_layer(layer)
        if tokens not in SELECTIONS:
            raise ValueError(f"tokens must be one of {SELECTIONS}, got {tokens!r}")
        if batch_size < 1 or capture_batch_size < 1:
            raise ValueError("batch_size and capture_batch_size must be >= 1")
        if window_tokens < batch_size:
            raise ValueError(f"window_tokens {window_tokens} is smaller than the batch size {batch_size}")
        if len(source) == 0:
            raise ValueError("the data source has no records")
        self.adapter, self.source, self.layer = adapter, source, layer
        self.batch_size, self.seed, self.tokens, self.include_special = batch_size, seed, tokens, include_special
        self.window_tokens = window_tokens - window_tokens % batch_size  # whole batches per window
        self.capture_batch_size, self.max_seq_len, self.epochs = capture_batch_size, max_seq_len, epochs
        self.window, self.batch, self.record, self.offset = 0, 0, 0, 0
        self.rejects: dict[int, tuple[str, str]] = {}  # source index -> (id, reason), logged once
        self._current: _Window | None = None  # the window being emitted (or window 0 kept by mean_norm)
        self._mean_norm: float | None = None

    @property
    def d_in(self) -> int:
        return int(self.adapter.d_model)

    def training_defaults(self, out_dir: str | Path) -> dict[str, Any]:
        """Layer and model of this source and, for a fresh run, the norm scale √d / E‖x‖ over the first window (a
        resumed run takes the scale from its checkpoint)."""
        fresh = not (Path(out_dir) / "checkpoint.pt").exists()
        return {"hook_layer": self.layer, "model": self.identity()["model"], "extra": {"online": self.identity()},
                "norm_scale": math.sqrt(self.d_in) / self.mean_norm() if fresh else None}

    def identity(self) -> dict[str, Any]:
        """What a resumed run must share with the run that wrote the state."""
        describe = getattr(self.source, "describe", None)
        model = getattr(self.adapter, "source", None)
        return {"model": str(Path(model).resolve()) if model else None, "data": describe() if describe else len(self.source),
                "layer": self.layer, "tokens": self.tokens, "include_special": self.include_special,
                "batch_size": self.batch_size, "seed": self.seed, "window_tokens": self.window_tokens,
                "capture_batch_size": self.capture_batch_size, "max_seq_len": self.max_seq_len, "epochs": self.epochs}

    # -- the token stream -------------------------------------------------------------------------
    def _reject(self, i: int, sid: str, reason: str) -> None:
        if i % len(self.source) not in self.rejects:
            self.rejects[i % len(self.source)] = (sid, reason)
            log.warning("online: skipped record %d (%s): %s", i % len(self.source), sid, reason)

    def _records(self, start: int) -> Iterator[tuple[int, Tensor]]:
        """(record number, its selected tokens [N, D] float32) for records start, start+1, ..."""
        from mmsae.store import selected
        from mmsae.store.stream import capture_batches

        n, C = len(self.source), self.capture_batch_size
        end = None if self.epochs is None else self.epochs * n
        group, silent = start // C, 0
        cycled = _Cycled(self.source)
        while end is None or group * C < end:
            lo, hi = group * C, (group + 1) * C if end is None else min((group + 1) * C, end)
            for _consumed, captured in capture_batches(self.adapter, cycled, range(lo, hi), self.layer, C,
                                                       self._reject, self.max_seq_len):
                for c in captured:
                    if c.index < start:
                        continue
                    keep = np.flatnonzero(selected(c.table.modality, self.tokens, self.include_special))
                    acts_ND = c.acts_SD[torch.as_tensor(keep, device=c.acts_SD.device)].float()
                    silent = 0 if len(keep) else silent
                    yield c.index, acts_ND
            silent += hi - lo
            if silent >= n + C:  # a whole pass over the data without one selected token
                raise RuntimeError(f"no record of the data gives a {self.tokens!r} token (rejects: {len(self.rejects)})")
            group += 1

    def _fill(self, stream: Iterator[tuple[int, Tensor]], pending: list, window: _Window) -> None:
        """Take window_tokens tokens from (pending leftover of a record, then) the stream."""
        parts, have = [], 0
        g, acts_ND, used = pending.pop() if pending else (window.record, None, window.offset)
        while have < self.window_tokens:
            if acts_ND is None or used == acts_ND.shape[0]:
                item = next(stream, None)
                if item is None:
                    break
                if acts_ND is not None or item[0] != window.record:
                    used = 0  # a new record; only the window's first record starts at an offset
                g, acts_ND = item
                continue
            take = min(self.window_tokens - have, acts_ND.shape[0] - used)
            parts.append(acts_ND[used : used + take])
            have, used = have + take, used + take
        if acts_ND is not None and used < acts_ND.shape[0]:
            pending.append((g, acts_ND, used))
            window.next_record, window.next_offset = g, used
        else:
            window.next_record, window.next_offset = (g + 1 if acts_ND is not None else g), 0
        window.acts_ND = torch.cat(parts) if parts else None

    def _order(self, window: int, n: int) -> Tensor:
        seed = int(np.random.SeedSequence([self.seed, window]).generate_state(1)[0])
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed))

    # -- the source protocol ----------------------------------------------------------------------
    def __iter__(self) -> Iterator[Tensor]:
        stream, pending = None, []
        while True:
            w = self._current
            if w is None or (w.index, w.record, w.offset) != (self.window, self.record, self.offset):
                if stream is None:
                    stream = self._records(self.record)
                self._current = None  # let the emitted window go before the next one fills
                w = _Window(self.window, self.record, self.offset)
                self._fill(stream, pending, w)
                self._current = w
            else:
                stream, pending = None, []  # a kept window: the stream restarts after it
            n_batches = w.n_tokens() // self.batch_size
            if n_batches == 0:
                return
            order = self._order(w.index, w.acts_ND.shape[0]).to(w.acts_ND.device)
            while self.batch < n_batches:
                j = self.batch
                self.batch += 1  # before yielding: a state taken now points past this batch
                yield w.acts_ND[order[j * self.batch_size : (j + 1) * self.batch_size]]
            if w.n_tokens() < self.window_tokens:  # the stream ended inside this window
                return
            self.window, self.batch, self.record, self.offset = w.index + 1, 0, w.next_record, w.next_offset
            if stream is None:
                stream = self._records(self.record)

    def mean_norm(self) -> float:
        """E‖x‖ over the first window's tokens (computed once; the window is kept for iteration)."""
        if self._mean_norm is None:
            w = _Window(0, 0, 0)
            self._fill(self._records(0), [], w)
            if w.acts_ND is None:
                raise RuntimeError("the data gives no token to estimate the activation norm from")
            self._mean_norm = float(w.acts_ND.double().norm(dim=1).mean())
            if (self.window, self.record, self.offset) == (0, 0, 0):
                self._current = w
        return self._mean_norm

    def state_dict(self) -> dict[str, Any]:
        w = self._current
        window, batch, record, offset = self.window, self.batch, self.record, self.offset
        if w is not None and w.index == window and w.n_tokens() == self.window_tokens \
                and batch >= self.window_tokens // self.batch_size:
            window, batch, record, offset = window + 1, 0, w.next_record, w.next_offset  # no window to redo
        return {"window": window, "batch": batch, "record": record, "offset": offset, "mean_norm": self._mean_norm,
                "identity": self.identity()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine, theirs = self.identity(), state.get("identity", {})
        diff = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
        if diff:
            raise ValueError(f"the online source's settings differ from the checkpoint's {diff}; resume with the same ones")
        self.window, self.batch = int(state["window"]), int(state["batch"])
        self.record, self.offset = int(state["record"]), int(state["offset"])
        self._mean_norm = state.get("mean_norm")


def open_online(model: str | Path, data: str, layer: int, batch_size: int, prompt: str | None = None,
                device: str = "auto", model_dtype: str | None = None, max_image_pixels: int | None = None,
                **kwargs: Any) -> OnlineBatches:
    """Load the model and the data and return an OnlineBatches over them (kwargs: see OnlineBatches).
    A missing model, a layer out of range or bad data fail before the weights load."""
    from mmsae.data import DEFAULT_MAX_PIXELS, open_source
    from mmsae.models import load_adapter
    from mmsae.models.registry import model_shape
    from mmsae.store import SELECTIONS

    if kwargs.get("tokens", "all") not in SELECTIONS:
        raise ValueError(f"tokens must be one of {SELECTIONS}, got {kwargs['tokens']!r}")
    model_shape(model, layer)
    source = open_source(data, prompt=prompt, max_pixels=max_image_pixels or DEFAULT_MAX_PIXELS)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, model_dtype) if model_dtype else None
    adapter = load_adapter(str(model), dtype=dtype, device=device)
    return OnlineBatches(adapter, source, layer, batch_size, **kwargs)
