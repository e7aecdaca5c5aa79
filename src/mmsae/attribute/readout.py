"""What is attributed: the metric d of each example, read at one position, and its validation.

d = logit(target) − logit(baseline) ("logit_diff") or log p(target) ("logprob"), from the logits at one
position per example. Positions are the token table's: 0 is the sequence's first real token, −1 its last
real token (the default), whichever side the batch was padded on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

METRICS = ("logit_diff", "logprob")


@dataclass(frozen=True)
class Readout:
    """Where and what d reads, per example: the padded column, its table position, target and baseline ids."""

    metric: str
    cols_B: np.ndarray  # int64 padded columns of the read position
    position_B: np.ndarray  # int64 the same as table positions (0 = first real token)
    target_B: np.ndarray  # int64 token ids
    baseline_B: np.ndarray | None  # int64 token ids; None for "logprob"

    def value(self, logits_BSV: Tensor, copies: int = 1) -> Tensor:
        """d_B (float32) from the logits of `copies` concatenated copies of the batch ([copies·B, S, V])."""
        dev = logits_BSV.device
        rows = torch.arange(logits_BSV.shape[0], device=dev)
        cols = torch.as_tensor(np.tile(self.cols_B, copies), device=dev)
        logits_BV = logits_BSV[rows, cols].float()
        target = torch.as_tensor(np.tile(self.target_B, copies), device=dev)
        if self.metric == "logprob":
            return torch.log_softmax(logits_BV, dim=-1)[rows, target]
        baseline = torch.as_tensor(np.tile(self.baseline_B, copies), device=dev)
        return logits_BV[rows, target] - logits_BV[rows, baseline]


def real_mask(encoded) -> np.ndarray:
    """bool [B, S]: the real (non-padding) columns of the padded batch."""
    mask = encoded.inputs.get("attention_mask")
    ids = encoded.inputs["input_ids"]
    if mask is None:
        return np.ones(tuple(ids.shape), dtype=bool)
    return mask.detach().cpu().numpy().astype(bool)


def vocab_size(adapter) -> int:
    return int(adapter.text_config().vocab_size)


def one_token(adapter, value, name: str) -> int:
    """A token id from an id or a string that is exactly one token.

    A string is tokenised without special tokens (so 'yes' becomes whatever the tokenizer makes of it, e.g.
    '▁yes' for SentencePiece); a literal vocabulary entry ('▁yes', 'Ġyes') is accepted as it is."""
    V = vocab_size(adapter)
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a token string or an id in 0..{V - 1}, got {value!r}")
    if isinstance(value, (int, np.integer)):
        if not 0 <= int(value) < V:
            raise ValueError(f"{name} id {int(value)} is out of range: the vocabulary has ids 0..{V - 1}")
        return int(value)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty token string or an id in 0..{V - 1}, got {value!r}")
    tok = adapter.tokenizer
    ids = list(tok.encode(value, add_special_tokens=False))
    if len(ids) == 1:
        return int(ids[0])
    vocab = tok.get_vocab()
    if value in vocab:
        return int(vocab[value])
    pieces = tok.convert_ids_to_tokens(ids)
    raise ValueError(f"{name} {value!r} is not exactly one token: it tokenises as {pieces!r} ({len(ids)} tokens); "
                     f"give one token (a string that tokenises to one id, a vocabulary entry, or an id in 0..{V - 1})")


def per_example(value, B: int, name: str) -> list:
    """One value for all examples, or a list with one per example."""
    if isinstance(value, (list, tuple, np.ndarray)):
        values = list(value)
        if len(values) != B:
            raise ValueError(f"{name} has {len(values)} entries for a batch of {B}; give one for all or one per example")
        return values
    return [value] * B


def make_readout(adapter, encoded, target, baseline=None, metric: str = "logit_diff",
                 position: int | Sequence[int] | None = None) -> Readout:
    """Validate target, baseline, metric and position for the batch; ValueError names the value and the range."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    B = len(encoded.tables)
    if B < 1:
        raise ValueError("the encoded batch is empty; encode at least one prompt")
    target_B = np.array([one_token(adapter, t, "target") for t in per_example(target, B, "target")], dtype=np.int64)
    if metric == "logit_diff":
        if baseline is None:
            raise ValueError("metric 'logit_diff' needs a baseline token (d = logit(target) − logit(baseline)); "
                             "give one or use metric 'logprob'")
        baseline_B = np.array([one_token(adapter, t, "baseline") for t in per_example(baseline, B, "baseline")],
                              dtype=np.int64)
        same = np.flatnonzero(baseline_B == target_B)
        if len(same):
            raise ValueError(f"example {int(same[0])}: baseline and target are the same token (id "
                             f"{int(target_B[same[0]])}), so d = 0; give a different baseline")
    else:
        if baseline is not None:
            raise ValueError(f"metric 'logprob' reads no baseline, got baseline {baseline!r}; "
                             "use metric 'logit_diff' to compare with it")
        baseline_B = None
    mask_BS = real_mask(encoded)
    cols, positions = [], []
    for b, p in enumerate(per_example(position, B, "position")):
        real = np.flatnonzero(mask_BS[b])
        n = len(real)
        if n == 0:
            raise ValueError(f"example {b} has no real tokens")
        if p is None:
            p = n - 1
        if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, np.integer)) or not -n <= int(p) < n:
            raise ValueError(f"position {p!r} is out of range for example {b}: it has {n} real tokens, valid "
                             f"positions are {-n}..{n - 1} (0 = the first real token, -1 = the last)")
        p = int(p) % n
        cols.append(int(real[p]))
        positions.append(p)
    return Readout(metric, np.array(cols, np.int64), np.array(positions, np.int64), target_B, baseline_B)
