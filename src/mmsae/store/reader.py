"""Reading a store: the manifest, the token table, and shuffled training batches.

Shuffling is two-level with bounded memory: every epoch permutes the shard order, groups it into
windows of `window_shards` shards, and permutes the rows inside each window. The row stream is a
pure function of (seed, epoch), so a reader is resumed from one integer: rows already consumed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from .files import MANIFEST


@dataclass
class Batch:
    acts_BD: torch.Tensor
    rows_B: torch.Tensor  # global row ids (join with the token table's `row`)
    position: int  # rows consumed after this batch: pass it back as `start` to resume


class ActivationStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        path = self.root / MANIFEST
        if not path.exists():
            raise FileNotFoundError(f"{self.root} has no {MANIFEST}: not a finished store (rerun harvest)")
        self.manifest = json.loads(path.read_text())
        self.shards = self.manifest["shards"]
        self._sizes = np.array([s["row_end"] - s["row_start"] for s in self.shards], np.int64)

    @property
    def n_rows(self) -> int:
        return int(self.manifest["n_rows"])

    @property
    def d_in(self) -> int:
        return int(self.manifest["d_in"])

    @property
    def mean_D(self) -> torch.Tensor:
        return torch.tensor(self.manifest["mean"], dtype=torch.float64)

    def shard_acts(self, i: int) -> torch.Tensor:
        with safe_open(self.root / self.shards[i]["acts"], framework="pt") as fh:
            return fh.get_tensor("acts")

    def rows(self, rows_N: np.ndarray | list[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Activations of the given global rows, in that order."""
        rows_N = np.asarray(rows_N, np.int64)
        starts = np.array([s["row_start"] for s in self.shards], np.int64)
        which_N = np.searchsorted(starts, rows_N, side="right") - 1
        out = torch.empty(len(rows_N), self.d_in, dtype=dtype)
        for i in np.unique(which_N):
            sel = np.flatnonzero(which_N == i)
            with safe_open(self.root / self.shards[i]["acts"], framework="pt") as fh:
                part = fh.get_slice("acts")
                local = rows_N[sel] - starts[i]
                out[sel] = part[int(local.min()):int(local.max()) + 1][torch.as_tensor(local - local.min())].to(dtype)
        return out

    def tokens(self):
        """The token table of every shard as one pyarrow Table, with the global `row` (null for
        tokens that are not training rows, e.g. BOS or image newlines by default)."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        parts = []
        for s in self.shards:
            t = pq.read_table(self.root / s["table"])
            t = t.append_column("row", pc.add(t["shard_row"], pa.scalar(s["row_start"], pa.int64())))
            parts.append(t)
        return pa.concat_tables(parts)

    def _epoch_plan(self, seed: int, epoch: int, window_shards: int) -> list[np.ndarray]:
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(self.shards))
        return [order[i : i + window_shards] for i in range(0, len(order), window_shards)]

    def _window_rows(self, shard_ids: np.ndarray, seed: int, epoch: int, w: int):
        starts = [self.shards[i]["row_start"] for i in shard_ids]
        rows_N = np.concatenate([np.arange(s, s + self._sizes[i]) for s, i in zip(starts, shard_ids)])
        perm = np.random.default_rng([seed, epoch, w, 1]).permutation(len(rows_N))
        return rows_N, perm

    def batches(self, batch_size: int, seed: int = 0, start: int = 0, window_shards: int = 4,
                epochs: int | None = 1, drop_last: bool = False, dtype: torch.dtype = torch.float32,
                rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        """Shuffled batches; memory is bounded by `window_shards` shards. `start` (rows consumed, as
        returned in Batch.position) resumes the exact stream. With world_size > 1 each rank takes
        every world_size-th batch of the same stream."""
        if self.n_rows == 0:
            return
        buf_acts = torch.zeros(0, self.d_in)
        buf_rows = torch.zeros(0, dtype=torch.int64)
        pos = start
        b_index = start // batch_size
        epoch = start // self.n_rows
        skip = start % self.n_rows
        while epochs is None or epoch < epochs:
            for w, shard_ids in enumerate(self._epoch_plan(seed, epoch, window_shards)):
                n_w = int(self._sizes[shard_ids].sum())
                if skip >= n_w:
                    skip -= n_w
                    continue
                rows_N, perm = self._window_rows(shard_ids, seed, epoch, w)
                take = torch.as_tensor(perm[skip:])
                acts_ND = torch.cat([self.shard_acts(i) for i in shard_ids])[take]
                # One concatenation per window; batches are then views of it.
                buf_acts = torch.cat([buf_acts.to(acts_ND.dtype), acts_ND])
                buf_rows = torch.cat([buf_rows, torch.as_tensor(rows_N)[take]])
                skip = 0
                off = 0
                while len(buf_rows) - off >= batch_size:
                    pos += batch_size
                    if b_index % world_size == rank:
                        sl = slice(off, off + batch_size)
                        yield Batch(buf_acts[sl].to(dtype), buf_rows[sl], pos)
                    b_index += 1
                    off += batch_size
                buf_acts, buf_rows = buf_acts[off:], buf_rows[off:]
            epoch += 1
        if len(buf_rows) and not drop_last and b_index % world_size == rank:
            yield Batch(buf_acts.to(dtype), buf_rows, pos + len(buf_rows))
