"""The one codes type every SAE kind returns from `encode`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Codes:
    """Latent codes for a batch of B tokens.

    Sparse (TopK, BatchTopK in training): `values` is [B, K] and `indices` is [B, K]; a zero value
    is padding and means "not active". Dense (ReLU, JumpReLU): `values` is [B, F], `indices` is None.
    Both forms carry `n_latents` so consumers never have to ask the SAE for F.
    """

    values: Tensor
    indices: Tensor | None
    n_latents: int

    @property
    def is_sparse(self) -> bool:
        return self.indices is not None

    @property
    def batch_size(self) -> int:
        return int(self.values.shape[0])

    def to_dense(self) -> Tensor:
        """[B, F] codes; scatter-add so duplicate indices (never produced here) would still sum."""
        if self.indices is None:
            return self.values
        dense_BF = self.values.new_zeros(self.batch_size, self.n_latents)
        return dense_BF.scatter_add_(1, self.indices, self.values)

    def active_B(self) -> Tensor:
        """Number of non-zero latents per token (the per-token L0)."""
        return (self.values != 0).sum(dim=1)

    def fired_F(self) -> Tensor:
        """How many tokens of the batch each latent fired on, as int64 [F]."""
        if self.indices is None:
            return (self.values != 0).sum(dim=0).to(torch.int64)
        # scatter-add of 0/1 rather than indexing by the active mask: no host sync, no copy
        counts_F = torch.zeros(self.n_latents, dtype=torch.int64, device=self.values.device)
        return counts_F.scatter_add_(0, self.indices.reshape(-1), (self.values != 0).reshape(-1).long())

    def detach(self) -> Codes:
        return Codes(self.values.detach(), self.indices, self.n_latents)
