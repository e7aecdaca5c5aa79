"""One shard: activations (safetensors), its token table (Parquet), and a JSON commit marker.

Shard k always holds records [k*R, (k+1)*R) of the source, whatever the number of ranks, so a
store is the same whether made by one process or many, in one go or resumed after a kill.
The JSON marker is written last: a shard without it is incomplete and is redone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors.torch import save_file

from mmsae.models.table import IMAGE, MODALITIES, SPECIAL, TEXT, TokenTable

from .files import atomic_path, shard_stem, write_json

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}
SELECTIONS = ("all", "image", "text")


def selected(modality_S: np.ndarray, tokens: str, include_special: bool) -> np.ndarray:
    """Which tokens become training rows."""
    if tokens not in SELECTIONS:
        raise ValueError(f"tokens must be one of {SELECTIONS}, got {tokens!r}")
    keep = {"all": (TEXT, IMAGE), "image": (IMAGE,), "text": (TEXT,)}[tokens]
    mask = np.isin(modality_S, keep)
    if include_special:
        mask |= modality_S == SPECIAL
    return mask


@dataclass
class ShardBuilder:
    """Accumulates the sequences of one shard: activations per batch, token-table columns per record;
    the Parquet table is built once, column by column, when the shard is written."""

    index: int
    records: tuple[int, int]
    d_in: int
    acts: list[torch.Tensor] = field(default_factory=list)
    parts: list[tuple[int, str, TokenTable, np.ndarray]] = field(default_factory=list)  # + shard_row_S
    rejects: list[dict] = field(default_factory=list)
    n_rows: int = 0
    n_samples: int = 0
    sum_D: torch.Tensor | None = None
    sum_norm: float = 0.0

    def __post_init__(self):
        self.sum_D = torch.zeros(self.d_in, dtype=torch.float64)

    def add_batch(self, captured: list, tokens: str, include_special: bool, dtype: torch.dtype) -> None:
        """Add a batch of `stream.Captured`: one device-to-host copy, row gather, cast and norm for the whole
        batch (it runs beside the forward, so few, large operations); per record the sums and the
        token-table bookkeeping."""
        if not captured:
            return
        acts_TD = torch.cat([c.acts_SD.detach() for c in captured]).to("cpu")
        keep_T = np.concatenate([selected(c.table.modality, tokens, include_special) for c in captured])
        rows_N = torch.from_numpy(np.flatnonzero(keep_T))
        # statistics of the activations as the model made them, before the cast to the stored dtype
        x_ND = acts_TD.index_select(0, rows_N).double()
        norm_N = torch.linalg.vector_norm(x_ND, dim=1)
        self.acts.append(x_ND.to(dtype))
        start = row = 0
        for c in captured:
            n = len(c.table)
            kept = np.flatnonzero(keep_T[start:start + n])
            # summed record by record, in record order: the statistics (and the SAE trained from the
            # normalisation they give) stay bit for bit those of any batch size
            self.sum_D += x_ND[row:row + len(kept)].sum(0)
            self.sum_norm += float(norm_N[row:row + len(kept)].sum())
            row += len(kept)
            shard_row = np.full(n, -1, np.int64)
            shard_row[kept] = self.n_rows + np.arange(len(kept))
            self.n_rows += len(kept)
            self.n_samples += 1
            self.parts.append((c.index, c.id, c.table, shard_row))
            start += n

    def reject(self, sample_index: int, sample_id: str, reason: str) -> None:
        self.rejects.append({"index": sample_index, "id": sample_id, "reason": reason})

    def write(self, root: Path, dtype: torch.dtype) -> dict:
        stem = shard_stem(self.index)
        acts_ND = torch.cat(self.acts) if self.acts else torch.zeros(0, self.d_in, dtype=dtype)
        with atomic_path(root / f"{stem}.safetensors") as tmp:
            save_file({"acts": acts_ND.contiguous(), "sum_D": self.sum_D}, str(tmp))
        table = _arrow(self.index, self.parts)
        with atomic_path(root / f"{stem}.parquet") as tmp:
            pq.write_table(table, tmp)
        modality_T = table["modality"].combine_chunks().indices.to_numpy()
        is_row_T = table["shard_row"].is_valid().to_numpy(zero_copy_only=False)
        meta = {
            "index": self.index,
            "records": list(self.records),
            "n_rows": self.n_rows,
            "n_samples": self.n_samples,
            "rows": dict(zip(MODALITIES, np.bincount(modality_T[is_row_T], minlength=3).tolist())),
            "tokens": dict(zip(MODALITIES, np.bincount(modality_T, minlength=3).tolist())),
            "sum_norm": self.sum_norm,
            "rejects": self.rejects,
            "acts": f"{stem}.safetensors",
            "table": f"{stem}.parquet",
        }
        write_json(root / f"{stem}.json", meta)  # the commit marker, last
        return meta


def _arrow(shard: int, parts: list[tuple[int, str, TokenTable, np.ndarray]]) -> pa.Table:
    """The shard's token table: every record's columns concatenated once (no per-record Arrow tables)."""
    n_M = np.array([len(t) for _, _, t, _ in parts], np.int64)
    n = int(n_M.sum())

    def cat(get, dtype):
        return np.concatenate([get(p) for p in parts]).astype(dtype, copy=False) if parts else np.zeros(0, dtype)

    shard_row = cat(lambda p: p[3], np.int64)
    ids = pa.array([sid for _, sid, _, _ in parts], pa.string())
    data = {
        "shard": pa.array(np.full(n, shard, np.int32)),
        "shard_row": pa.array(shard_row, mask=shard_row < 0),
        "sample_index": pa.array(np.repeat(np.array([i for i, _, _, _ in parts], np.int64), n_M)),
        "sample_id": pa.DictionaryArray.from_arrays(pa.array(np.repeat(np.arange(len(parts), dtype=np.int32), n_M)),
                                                    ids).cast(pa.string()),
        "position": pa.array(cat(lambda p: p[2].position, np.int32)),
        "token_id": pa.array(cat(lambda p: p[2].token_id, np.int64)),
        "modality": pa.DictionaryArray.from_arrays(pa.array(cat(lambda p: p[2].modality, np.int8)),
                                                   pa.array(list(MODALITIES))),
    }
    for name in ("image_index", "tile", "patch_row", "patch_col"):
        col = cat(lambda p, name=name: getattr(p[2], name), np.int32)
        data[name] = pa.array(col, mask=col < 0)
    for j, name in enumerate(("x0", "y0", "x1", "y1")):
        col = cat(lambda p, j=j: p[2].box[:, j], np.float64)
        data[name] = pa.array(col.astype(np.float32), mask=np.isnan(col))
    return pa.table(data)


def read_meta(root: Path, k: int) -> dict | None:
    """The commit marker of shard k if the shard is complete (marker and both files present)."""
    path = root / f"{shard_stem(k)}.json"
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if not ((root / meta["acts"]).exists() and (root / meta["table"]).exists()):
        return None
    return meta
