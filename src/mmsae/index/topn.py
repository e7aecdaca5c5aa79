"""Running top-N per feature, as [F, N] tensors merged batch by batch (on the GPU when there is one).

Order: score descending, then key ascending (keys encode the sample index, so ties go to the earlier
sample). The order is total, so the result is the same whatever the batch boundaries or resume points.
Only candidates with score > 0 enter: a feature that never fires on an item has no example there.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

EMPTY_KEY = torch.iinfo(torch.int64).max  # the key of an unfilled slot (sorts last among -inf scores)

Payload = dict[str, Tensor]


def order_by_score_then_key(score: Tensor, key: Tensor, dim: int = -1) -> Tensor:
    """Permutation sorting along `dim` by score descending, ties by key ascending (two stable sorts)."""
    by_key = torch.sort(key, dim=dim, stable=True).indices
    by_score = torch.sort(score.gather(dim, by_key), dim=dim, descending=True, stable=True).indices
    return by_key.gather(dim, by_score)


def best_per_feature(feat_C: Tensor, score_C: Tensor, key_C: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Candidates reduced to each feature's best n: (kept candidate indices sorted by feature then
    rank, their rank within the feature)."""
    perm = order_by_score_then_key(score_C, key_C)
    perm = perm[torch.sort(feat_C[perm], stable=True).indices]  # group by feature, keep the order inside
    feat_sorted = feat_C[perm]
    _, counts = torch.unique_consecutive(feat_sorted, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(perm), device=perm.device) - torch.repeat_interleave(starts, counts)
    keep = rank < n
    return perm[keep], rank[keep]


class RunningTopN:
    """score_FN, key_FN and per-slot payload tensors [F, N, ...] kept in rank order (0 = best)."""

    def __init__(self, n_features: int, n: int, payload_shapes: dict[str, tuple[tuple[int, ...], torch.dtype]],
                 device: torch.device | str = "cpu", score_dtype: torch.dtype = torch.float32):
        if n < 1:
            raise ValueError(f"top-N needs n >= 1, got {n}")
        self.n = n
        self.score_FN = torch.full((n_features, n), float("-inf"), dtype=score_dtype, device=device)
        self.key_FN = torch.full((n_features, n), EMPTY_KEY, dtype=torch.int64, device=device)
        self.payload: Payload = {
            name: torch.zeros((n_features, n, *shape), dtype=dtype, device=device)
            for name, (shape, dtype) in payload_shapes.items()
        }

    @property
    def n_features(self) -> int:
        return int(self.score_FN.shape[0])

    @torch.no_grad()
    def update(self, feat_C: Tensor, score_C: Tensor, key_C: Tensor,
               payload_C: Payload | Callable[[Tensor], Payload] | None = None) -> Tensor:
        """Merge candidates (feature, score, key, payload). Keys must be unique per feature across
        all updates. `payload_C` is a dict of [C, ...] tensors or a function of the kept candidate
        indices returning them (so that costly payloads are built only for the few that can enter).
        Returns the indices of the candidates that are in the top-N after the merge."""
        ok = score_C > 0  # also drops NaN
        idx_C = torch.nonzero(ok).squeeze(1)
        if len(idx_C) == 0:
            return idx_C
        kept, rank = best_per_feature(feat_C[idx_C], score_C[idx_C], key_C[idx_C], self.n)
        cand = idx_C[kept]
        feat = feat_C[cand].long()
        touched, row = torch.unique_consecutive(feat, return_inverse=True)
        T, N = len(touched), self.n
        new_score = torch.full((T, N), float("-inf"), dtype=self.score_FN.dtype, device=feat.device)
        new_key = torch.full((T, N), EMPTY_KEY, dtype=torch.int64, device=feat.device)
        new_score[row, rank] = score_C[cand].to(new_score.dtype)
        new_key[row, rank] = key_C[cand]
        both_score = torch.cat([self.score_FN[touched], new_score], 1)
        both_key = torch.cat([self.key_FN[touched], new_key], 1)
        take_TN = order_by_score_then_key(both_score, both_key)[:, :N]
        self.score_FN[touched] = both_score.gather(1, take_TN)
        self.key_FN[touched] = both_key.gather(1, take_TN)
        if self.payload:
            values = payload_C(cand) if callable(payload_C) else {k: v[cand] for k, v in (payload_C or {}).items()}
            for name, old_FN in self.payload.items():
                extra = old_FN.shape[2:]
                fresh = torch.zeros((T, N, *extra), dtype=old_FN.dtype, device=feat.device)
                fresh[row, rank] = values[name].to(old_FN.dtype)
                both = torch.cat([old_FN[touched], fresh], 1)
                gather_idx = take_TN.reshape(T, N, *([1] * len(extra))).expand(T, N, *extra)
                old_FN[touched] = both.gather(1, gather_idx)
        # Which candidates made it: their key is now among their feature's keys.
        present = (self.key_FN[feat] == key_C[cand][:, None]).any(1)
        return cand[present]

    def contains(self, feat_P: Tensor, key_P: Tensor, block: int = 1 << 20) -> Tensor:
        """For (feature, key) pairs: is the pair currently in the top-N? Evaluated in blocks to bound memory."""
        out = torch.zeros(len(feat_P), dtype=torch.bool, device=feat_P.device)
        for s in range(0, len(feat_P), block):
            f, k = feat_P[s:s + block].long(), key_P[s:s + block]
            out[s:s + block] = (self.key_FN[f] == k[:, None]).any(1)
        return out

    def filled(self) -> Tensor:
        """[F, N] mask of the slots that hold an item."""
        return self.key_FN != EMPTY_KEY

    def to(self, device: torch.device | str) -> RunningTopN:
        self.score_FN, self.key_FN = self.score_FN.to(device), self.key_FN.to(device)
        self.payload = {k: v.to(device) for k, v in self.payload.items()}
        return self

    def state_dict(self) -> dict[str, Tensor]:
        return {"score_FN": self.score_FN.cpu(), "key_FN": self.key_FN.cpu(),
                **{f"payload.{k}": v.cpu() for k, v in self.payload.items()}}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for name, dst in [("score_FN", self.score_FN), ("key_FN", self.key_FN),
                          *[(f"payload.{k}", v) for k, v in self.payload.items()]]:
            src = state[name]
            if src.shape != dst.shape or src.dtype != dst.dtype:
                raise ValueError(f"saved top-N state {name} is {tuple(src.shape)} {src.dtype}, "
                                 f"expected {tuple(dst.shape)} {dst.dtype}")
            dst.copy_(src)
