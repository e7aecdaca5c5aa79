"""Activation sources the trainer reads: any iterable of [B, D] tensors with a resumable position.

A source implements `__iter__` (yielding acts_BD, or objects with an `acts_BD` attribute) and
`state_dict()` / `load_state_dict()`, where the state taken right after a batch was yielded makes a
fresh iteration start with the batch after it. `rank_aware = True` says the source already gives
each data-parallel rank its own batches; otherwise the trainer slices every batch by rank.
"""

from __future__ import annotations

import math

from pathlib import Path
from typing import Any, Iterator, Protocol, runtime_checkable

import torch
from torch import Tensor

from mmsae.store.files import load_activation_file  # noqa: F401 (re-exported: mmsae.train.load_activation_file)


@runtime_checkable
class ActivationSource(Protocol):
    def __iter__(self) -> Iterator[Any]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def batch_tensor(item: Any) -> Tensor:
    return item.acts_BD if hasattr(item, "acts_BD") else item


class TensorBatches:
    """Shuffled batches from an in-memory [N, D] tensor; each epoch's order depends on (seed, epoch)."""

    rank_aware = False

    def __init__(self, acts_ND: Tensor, batch_size: int, seed: int = 0, shuffle: bool = True, epochs: int | None = None):
        if batch_size > acts_ND.shape[0]:
            raise ValueError(f"batch_size {batch_size} exceeds the {acts_ND.shape[0]} rows available")
        self.acts_ND = acts_ND
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.epochs = epochs
        self.epoch = 0
        self.pos = 0  # batches of the current epoch already yielded

    @property
    def d_in(self) -> int:
        return int(self.acts_ND.shape[1])

    def __iter__(self) -> Iterator[Tensor]:
        n_batches = self.acts_ND.shape[0] // self.batch_size
        while self.epochs is None or self.epoch < self.epochs:
            if self.shuffle:
                order = torch.randperm(self.acts_ND.shape[0], generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
            else:
                order = torch.arange(self.acts_ND.shape[0])
            while self.pos < n_batches:
                i = self.pos
                self.pos += 1  # before yielding: a state taken now points past this batch
                yield self.acts_ND[order[i * self.batch_size : (i + 1) * self.batch_size]]
            self.epoch += 1
            self.pos = 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])


class StoreBatches:
    """Adapter over `mmsae.store.ActivationStore.batches`: resumable by rows consumed, rank-aware
    (rank r takes every world-th batch of one shuffled stream)."""

    rank_aware = True

    def __init__(self, root: str | Path, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 epochs: int | None = None, window_shards: int = 4):
        from mmsae.store import ActivationStore

        self.store = ActivationStore(root)
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.epochs, self.window_shards = epochs, window_shards
        self.position = 0

    @property
    def d_in(self) -> int:
        return self.store.d_in

    @property
    def manifest(self) -> dict[str, Any]:
        return self.store.manifest

    def training_defaults(self, out_dir: str | Path) -> dict[str, Any]:
        """What the store knows of its own training: norm scale √d / E‖x‖ (from the manifest's mean norm), the
        hook layer and the model it was harvested from."""
        m = self.manifest
        return {"norm_scale": math.sqrt(self.d_in) / float(m["mean_norm"]) if m.get("mean_norm") else None,
                "hook_layer": m.get("layer"), "model": (m.get("model") or {}).get("path")}

    def __iter__(self) -> Iterator[Tensor]:
        for batch in self.store.batches(self.batch_size, seed=self.seed, start=self.position, epochs=self.epochs,
                                        drop_last=True, window_shards=self.window_shards,
                                        rank=self.rank, world_size=self.world_size):
            self.position = batch.position
            yield batch.acts_BD

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])


def with_source_defaults(cfg: Any, data: Any, out_dir: str | Path) -> Any:
    """A copy of the TrainConfig `cfg` with the fields it leaves None (norm_scale, hook_layer, model) filled in
    from the source's own `training_defaults` (a store's manifest, an online source's model); the API and the CLI
    both go through this, so they train the same SAE."""
    import dataclasses

    defaults = getattr(data, "training_defaults", None)
    if defaults is None:
        return cfg
    given = {k: v for k, v in defaults(out_dir).items() if v is not None}
    fill = {k: v for k, v in given.items() if k != "extra" and getattr(cfg, k) is None
            and (k != "norm_scale" or cfg.normalize)}
    if "extra" in given:
        fill["extra"] = {**cfg.extra, **given["extra"]}
    return dataclasses.replace(cfg, **fill) if fill else cfg


def open_source(path: Path, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> TensorBatches | StoreBatches:
    """A store folder (manifest.json) or an activation file, as a resumable source."""
    path = Path(path)
    if path.is_dir():
        return StoreBatches(path, batch_size, seed=seed, rank=rank, world_size=world_size)
    return TensorBatches(load_activation_file(path).float(), batch_size, seed=seed)
