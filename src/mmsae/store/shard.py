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
    """Accumulates the sequences of one shard."""

    index: int
    records: tuple[int, int]
    d_in: int
    acts: list[torch.Tensor] = field(default_factory=list)
    tables: list[pa.Table] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    n_rows: int = 0
    n_samples: int = 0
    sum_D: torch.Tensor | None = None
    sum_norm: float = 0.0
    rows_by_modality: list[int] = field(default_factory=lambda: [0, 0, 0])
    tokens_by_modality: list[int] = field(default_factory=lambda: [0, 0, 0])

    def __post_init__(self):
        self.sum_D = torch.zeros(self.d_in, dtype=torch.float64)

    def add(self, sample_index: int, sample_id: str, table: TokenTable, acts_SD: torch.Tensor,
            keep_S: np.ndarray, dtype: torch.dtype) -> None:
        rows_N = np.flatnonzero(keep_S)
        x_ND = acts_SD[torch.as_tensor(rows_N, device=acts_SD.device)].detach().to("cpu", torch.float64)
        self.sum_D += x_ND.sum(0)
        self.sum_norm += float(x_ND.norm(dim=1).sum())
        self.acts.append(x_ND.to(dtype))
        shard_row = np.full(len(table), -1, np.int64)
        shard_row[rows_N] = self.n_rows + np.arange(len(rows_N))
        self.n_rows += len(rows_N)
        self.n_samples += 1
        for m in range(3):
            self.rows_by_modality[m] += int((table.modality[rows_N] == m).sum())
            self.tokens_by_modality[m] += int((table.modality == m).sum())
        self.tables.append(_arrow(self.index, sample_index, sample_id, table, shard_row))

    def reject(self, sample_index: int, sample_id: str, reason: str) -> None:
        self.rejects.append({"index": sample_index, "id": sample_id, "reason": reason})

    def write(self, root: Path, dtype: torch.dtype) -> dict:
        stem = shard_stem(self.index)
        acts_ND = torch.cat(self.acts) if self.acts else torch.zeros(0, self.d_in, dtype=dtype)
        with atomic_path(root / f"{stem}.safetensors") as tmp:
            save_file({"acts": acts_ND.contiguous(), "sum_D": self.sum_D}, str(tmp))
        table = pa.concat_tables(self.tables) if self.tables else _arrow(self.index, 0, "", TokenTable.empty(0),
                                                                         np.zeros(0, np.int64))
        with atomic_path(root / f"{stem}.parquet") as tmp:
            pq.write_table(table, tmp)
        meta = {
            "index": self.index,
            "records": list(self.records),
            "n_rows": self.n_rows,
            "n_samples": self.n_samples,
            "rows": dict(zip(MODALITIES, self.rows_by_modality)),
            "tokens": dict(zip(MODALITIES, self.tokens_by_modality)),
            "sum_norm": self.sum_norm,
            "rejects": self.rejects,
            "acts": f"{stem}.safetensors",
            "table": f"{stem}.parquet",
        }
        write_json(root / f"{stem}.json", meta)  # the commit marker, last
        return meta


def _arrow(shard: int, sample_index: int, sample_id: str, t: TokenTable, shard_row: np.ndarray) -> pa.Table:
    n = len(t)
    cols = t.columns()
    data = {
        "shard": pa.array(np.full(n, shard, np.int32)),
        "shard_row": pa.array(shard_row, mask=shard_row < 0),
        "sample_index": pa.array(np.full(n, sample_index, np.int64)),
        "sample_id": pa.array([sample_id] * n, pa.string()),
        "position": pa.array(cols["position"]),
        "token_id": pa.array(cols["token_id"]),
        "modality": pa.DictionaryArray.from_arrays(pa.array(cols["modality"].astype(np.int8)),
                                                   pa.array(list(MODALITIES))),
    }
    for name in ("image_index", "tile", "patch_row", "patch_col"):
        data[name] = pa.array(cols[name], mask=cols[name] < 0)
    for name in ("x0", "y0", "x1", "y1"):
        data[name] = pa.array(cols[name].astype(np.float32), mask=np.isnan(cols[name]))
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
