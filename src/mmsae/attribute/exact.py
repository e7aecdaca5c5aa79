"""Exact effects: rerun the model with one feature zeroed at every position and read the true change of d.

Zeroing feature i keeps the error: x − z_i·W_dec[i] at each position where i is active (the SAE is not
re-encoded; the rest of the reconstruction and the error are as in the clean pass). Reruns are batched by
concatenating copies of the whole batch along the batch axis, copy m ablating each example's m-th
feature: every input tensor of the adapters is batch- or image-major, so M copies of the inputs are the
batch of M·B sequences with the same images in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .core import LayerCodes, check_sae, encode_layer, frozen, work_dtype
from .readout import Readout


def repeat_inputs(inputs: dict, copies: int) -> dict:
    """The inputs of `copies` concatenated copies of the batch (non-tensors as they are)."""
    if copies == 1:
        return inputs
    return {k: torch.cat([v] * copies, 0) if isinstance(v, Tensor) else v for k, v in inputs.items()}


def clean_codes(adapter, sae, layer: int, inputs: dict) -> LayerCodes:
    """The SAE's codes of the clean residual at the layer (a forward that stops after block `layer`)."""
    acts_BSD = adapter.capture(inputs, layer).clone()
    with frozen(sae):
        return encode_layer(sae, acts_BSD, work_dtype(adapter, sae))


def feature_delta(codes: LayerCodes, W_dec_FD: Tensor, b: int, feature: int) -> Tensor:
    """[S, D]: z_{t,feature}·W_dec[feature] at each position t of example b (0 where it is inactive)."""
    B, S, D = codes.shape
    rows = slice(b * S, (b + 1) * S)
    coef_S = (codes.values_TK[rows] * (codes.idx_TK[rows] == feature)).sum(1)
    return coef_S[:, None].to(W_dec_FD.dtype) * W_dec_FD[feature][None, :]


def exact_effects(adapter, sae, layer: int, encoded, features: Sequence[Sequence[int]], readout: Readout,
                  d_clean_B: Tensor | None = None, codes: LayerCodes | None = None, batch: int = 8) -> list[np.ndarray]:
    """For each example b, the change of its d when each feature of features[b] is zeroed at every position.

    d_clean_B: the clean metric (a clean forward when None); codes: the clean codes (computed when None).
    `batch` copies of the batch go through the model at a time. Returns float64 arrays, one per example."""
    check_sae(adapter, sae, layer)
    B = len(encoded.tables)
    if len(features) != B:
        raise ValueError(f"features has {len(features)} lists for a batch of {B}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch!r}")
    F = int(sae.cfg.n_latents)
    for b, fs in enumerate(features):
        bad = [f for f in fs if not 0 <= int(f) < F]
        if bad:
            raise ValueError(f"example {b}: features {bad} are out of range 0..{F - 1}")
    sae.to(adapter.device)
    if codes is None:
        codes = clean_codes(adapter, sae, layer, encoded.inputs)
    if d_clean_B is None:
        d_clean_B = readout.value(adapter.forward_logits(encoded.inputs))
    d_clean_B = d_clean_B.detach().double().cpu()
    n_max = max((len(fs) for fs in features), default=0)
    out = [np.full(len(fs), np.nan) for fs in features]
    dtype = work_dtype(adapter, sae)
    W_dec_FD = sae.W_dec.detach().to(dtype)
    _, S, D = codes.shape
    for m0 in range(0, n_max, batch):
        m1 = min(m0 + batch, n_max)
        G = m1 - m0
        delta_GBSD = torch.zeros(G, B, S, D, dtype=dtype, device=W_dec_FD.device)
        for g in range(G):
            for b in range(B):
                if m0 + g < len(features[b]):
                    delta_GBSD[g, b] = feature_delta(codes, W_dec_FD, b, int(features[b][m0 + g]))
        delta_MSD = delta_GBSD.reshape(G * B, S, D)

        def ablate(hidden_MSD: Tensor, site, delta_MSD=delta_MSD) -> Tensor:
            return (hidden_MSD.to(dtype) - delta_MSD.to(hidden_MSD.device)).to(hidden_MSD.dtype)

        with adapter.intervene(layer, ablate):
            logits_MSV = adapter.forward_logits(repeat_inputs(encoded.inputs, G))
        d_GB = readout.value(logits_MSV, copies=G).double().cpu().reshape(G, B)
        for g in range(G):
            for b in range(B):
                if m0 + g < len(features[b]):
                    out[b][m0 + g] = float(d_GB[g, b] - d_clean_B[b])
    return out
