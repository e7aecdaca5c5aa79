"""Attribution of a metric to every active SAE feature at every position in one forward and one backward.

At block `layer` the residual x is replaced by x' = decode(z) + e, with z the SAE's codes and e = x − decode(z)
the error, both leaves that require grad (x' equals x, so the forward is the clean one). One backward of
Σ_b d_b gives ∂d/∂z and ∂d/∂e everywhere; attribution_{t,i} = −z_{t,i}·∂d/∂z_{t,i} is the linear estimate of the
change of d when feature i is zeroed at position t (feature-circuits' zero-patch attribution patching), and
−e_t·∂d/∂e_t the error term's, so the total is Σ_i attr + error = −(x − b_dec)·∂d/∂x: nothing is hidden.

Codes are kept in sparse form ([T, K] values and indices; dense codes of ReLU/JumpReLU SAEs are packed to
their non-zeros first), so memory and the backward scale with B·S·K, not B·S·F. Examples of a batch do
not interact, so summing d over the batch gives each example its own gradient.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mmsae.sae.codes import Codes

from .readout import Readout, make_readout


@dataclass
class LayerCodes:
    """The clean pass at the layer: inputs x_TD (the working dtype) and sparse codes over all B·S columns."""

    x_TD: Tensor
    values_TK: Tensor
    idx_TK: Tensor
    n_latents: int
    shape: tuple[int, int, int]  # B, S, D


@contextlib.contextmanager
def frozen(sae) -> Iterator[None]:
    """The SAE in eval mode with its parameters out of autograd (only codes and error are differentiated;
    a decoder that requires grad would also build a [F, D] weight gradient on every backward)."""
    was_training = sae.training
    params = [p for p in sae.parameters() if p.requires_grad]
    sae.eval()
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
        sae.train(was_training)


def sparse_codes(codes: Codes) -> tuple[Tensor, Tensor]:
    """(values_TK, idx_TK): sparse codes as they are; dense ones packed to K = the largest count of
    non-zeros of any row (zero values pad, as in TopK codes)."""
    if codes.is_sparse:
        return codes.values, codes.indices
    dense_TF = codes.values
    k = max(int((dense_TF != 0).sum(1).max()) if dense_TF.numel() else 0, 1)
    idx_TK = dense_TF.abs().topk(k, dim=1).indices
    return dense_TF.gather(1, idx_TK), idx_TK


def work_dtype(adapter, sae) -> torch.dtype:
    """The wider of the model's and the SAE's dtypes: x − x̂ is formed there so that x' = x̂ + e is x."""
    return torch.promote_types(adapter.dtype, sae.W_dec.dtype)


def encode_layer(sae, hidden_BSD: Tensor, dtype: torch.dtype) -> LayerCodes:
    B, S, D = hidden_BSD.shape
    x_TD = hidden_BSD.detach().reshape(B * S, D).to(dtype)
    with torch.no_grad():
        values_TK, idx_TK = sparse_codes(sae.encode(x_TD.to(sae.W_enc.dtype)))
    return LayerCodes(x_TD, values_TK.detach(), idx_TK, sae.cfg.n_latents, (B, S, D))


def decode(sae, values_TK: Tensor, idx_TK: Tensor, n_latents: int) -> Tensor:
    return sae.decode(Codes(values_TK, idx_TK, n_latents))


def gradient_pass(adapter, sae, layer: int, inputs: dict, readout: Readout, alpha: float = 1.0,
                  cache: dict | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """One forward + one backward with x' = decode(α·z) + α·e at the layer (α = 1: the clean forward).

    Returns (d_B, ∂d/∂z at α [T, K], ∂d/∂e at α [T, D]). The clean codes are computed once and kept in
    `cache["codes"]` (the layer's input does not depend on α: the edit is at its output)."""
    cache = {} if cache is None else cache
    dtype = work_dtype(adapter, sae)
    leaves: dict[str, Tensor] = {}

    def edit(hidden_BSD: Tensor, site) -> Tensor:
        if site.step != 0:
            raise RuntimeError("attribution runs one full forward; this intervention was called again")
        if "codes" not in cache:
            codes = encode_layer(sae, hidden_BSD, dtype)
            xhat_TD = decode(sae, codes.values_TK, codes.idx_TK, codes.n_latents).to(dtype)
            cache["codes"], cache["error"] = codes, (codes.x_TD - xhat_TD).detach()
        codes = cache["codes"]
        z_TK = (codes.values_TK * alpha).requires_grad_(True)
        e_TD = (cache["error"] * alpha).requires_grad_(True)
        leaves["z"], leaves["e"] = z_TK, e_TD
        x_TD = decode(sae, z_TK, codes.idx_TK, codes.n_latents).to(dtype) + e_TD
        return x_TD.reshape(hidden_BSD.shape)

    with frozen(sae), adapter.intervene(layer, edit):
        logits_BSV = adapter.forward_logits(inputs, grad=True)
    d_B = readout.value(logits_BSV)
    grad_z_TK, grad_e_TD = torch.autograd.grad(d_B.sum(), [leaves["z"], leaves["e"]])
    return d_B.detach(), grad_z_TK, grad_e_TD


def check_sae(adapter, sae, layer: int) -> None:
    """ValueError unless the SAE reads this model's width and the layer exists."""
    adapter.check_layer(layer)
    if int(sae.cfg.d_in) != adapter.d_model:
        raise ValueError(f"the SAE reads width d_in={sae.cfg.d_in} but the model's residual stream has "
                         f"d_model={adapter.d_model}; use an SAE trained on this model")


def attribute(adapter, sae, layer: int, encoded, target, baseline=None, *, metric: str = "logit_diff",
              position: int | Sequence[int] | None = None, exact_top: int = 0, ig_steps: int = 0,
              exact_batch: int = 8):
    """Attribution of d (per example) to every active feature at every position, and to the error term.

    target/baseline: token strings (exactly one token each) or ids, one for all or a list per example.
    metric: "logit_diff" (d = logit(target) − logit(baseline); baseline required) or "logprob"
    (d = log p(target)). position: table position of the read-out (default −1: each sequence's last real
    token), one for all or one per example. ig_steps > 0: integrated gradients, the gradient averaged over
    α = 1/n, 2/n, …, 1 on the path α·(z, e) (feature-circuits' `ig`; n forwards and backwards instead of
    one). exact_top = N: the top N features of each example by |per-feature attribution| are also zeroed
    at every position (x − z_i·d_i, error kept) in reruns batched `exact_batch` copies of the batch at a
    time, and the true change of d is recorded as exact_effect. The SAE is moved to the model's device.
    """
    from .exact import exact_effects
    from .result import Attribution

    for name, value in (("exact_top", exact_top), ("ig_steps", ig_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    if isinstance(exact_batch, bool) or not isinstance(exact_batch, int) or exact_batch < 1:
        raise ValueError(f"exact_batch must be an integer >= 1, got {exact_batch!r}")
    check_sae(adapter, sae, layer)
    readout = make_readout(adapter, encoded, target, baseline, metric, position)
    sae.to(adapter.device)
    cache: dict = {}
    steps = max(ig_steps, 1)
    grad_z_TK = grad_e_TD = d_B = None
    # α = 1 last: its forward is the clean one, whose d is the example's metric
    for j in range(1, steps + 1):
        alpha = j / steps
        d, gz, ge = gradient_pass(adapter, sae, layer, encoded.inputs, readout, alpha, cache)
        grad_z_TK = gz if grad_z_TK is None else grad_z_TK + gz
        grad_e_TD = ge if grad_e_TD is None else grad_e_TD + ge
        d_B = d
    codes: LayerCodes = cache["codes"]
    attr_TK = -(codes.values_TK.to(grad_z_TK.dtype) * grad_z_TK) / steps
    error_T = -(cache["error"].to(grad_e_TD.dtype) * grad_e_TD).sum(-1) / steps
    result = Attribution.from_pass(adapter, encoded, readout, codes, attr_TK, error_T, d_B, ig_steps)
    if exact_top:
        features = [result.top_features(b, exact_top) for b in range(len(encoded.tables))]
        effects = exact_effects(adapter, sae, layer, encoded, features, readout, d_clean_B=d_B, codes=codes,
                                batch=exact_batch)
        result.set_exact(features, effects)
    return result
