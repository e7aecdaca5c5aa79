"""Residual-stream interventions at the adapter layer: one mechanism for splicing, ablation, steering
and attribution, in a plain forward, a grad-enabled forward and inside `generate` with the KV cache.

    def edit(hidden_BSD, site):           # site.cols: absolute columns of this call's S positions
        return hidden_BSD + vector_D
    with intervene(adapter, layer=3, fn=edit):
        logits = adapter.forward_logits(enc.inputs)             # or grad=True, or adapter.generate(...)

Under `generate` the first call (the prefill, `site.step == 0`) covers the whole padded prompt and
each later call covers the new position(s) only, with `site.start` = how many columns came before.
Every call is edited, the length-1 decoding steps included (SAELens' tutorial skips them, which
leaves the generated tokens unsteered). The column count comes from the attention mask the model is
called with (HF generate grows it by one column per step), or, where generate passes none (an
unpadded batch), from the KV cache's length, so it is the same for every family.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Site:
    """Where one forward call sits in the sequence: columns [start, stop) of the padded batch,
    the `step`-th call under this intervention (0: the prefill or a full forward) and the ids fed."""

    start: int
    stop: int
    step: int
    input_ids_BS: Tensor | None = None

    @property
    def cols(self) -> range:
        return range(self.start, self.stop)


Edit = Callable[[Tensor, Site], Tensor]


def _hidden(out):
    return out[0] if isinstance(out, tuple) else out


def _with_hidden(out, new):
    return (new, *out[1:]) if isinstance(out, tuple) else new


@contextlib.contextmanager
def intervene(adapter, layer: int, fn: Edit) -> Iterator[None]:
    """Within the block, the output of decoder block `layer` becomes fn(hidden_BSD, site) on every
    forward call of `adapter.model` made by this thread (nestable; several layers: nest several);
    another thread's forwards of the same model, as harvest's side-by-side streams, are left alone."""
    adapter.check_layer(layer)
    state = {"total": None, "cached": 0, "ids": None, "step": 0}
    owner = threading.get_ident()

    def pre(_module, args, kwargs):
        if threading.get_ident() != owner:
            return None
        mask = kwargs.get("attention_mask")
        state["total"] = int(mask.shape[-1]) if isinstance(mask, Tensor) and mask.dim() == 2 else None
        ids = kwargs.get("input_ids", args[0] if args and isinstance(args[0], Tensor) else None)
        state["ids"] = ids
        # without a mask (HF generate drops an all-ones one, e.g. an unpadded batch) the columns that
        # came before are the cache's length; transformers 5.2x names the cache `cache`, earlier
        # releases `past_key_values`
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        state["cached"] = _cached(cache) if cache is not None else 0

    def hook(_module, _args, out):
        if threading.get_ident() != owner:
            return None
        hidden_BSD = _hidden(out)
        S = hidden_BSD.shape[1]
        start = (state["total"] - S) if state["total"] is not None else state["cached"]
        ids = state["ids"] if isinstance(state["ids"], Tensor) and state["ids"].shape[-1] == S else None
        site = Site(start, start + S, state["step"], ids)
        state["step"] += 1
        new_BSD = fn(hidden_BSD, site)
        if new_BSD.shape != hidden_BSD.shape:
            raise ValueError(f"intervention changed shape {tuple(hidden_BSD.shape)} -> {tuple(new_BSD.shape)}")
        return _with_hidden(out, new_BSD.to(hidden_BSD.dtype))

    handles = [adapter.model.register_forward_pre_hook(pre, with_kwargs=True),
               adapter.decoder_layers()[layer].register_forward_hook(hook)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _cached(cache) -> int:
    try:
        return int(cache.get_seq_length())
    except (AttributeError, TypeError):
        return 0


def cols_mask(mask_BM: Tensor, site: Site, device) -> Tensor:
    """bool [B, S]: the columns of this call in a mask over the padded sequence (False beyond it)."""
    B, M = mask_BM.shape
    out = torch.zeros(B, site.stop - site.start, dtype=torch.bool)
    lo, hi = min(site.start, M), min(site.stop, M)
    if hi > lo:
        out[:, lo - site.start : hi - site.start] = mask_BM[:, lo:hi]
    return out.to(device)


def where(mask_BM: Tensor, replacement: Callable[[Tensor], Tensor]) -> Edit:
    """Positions in mask_BM (columns of the padded sequence) get replacement(acts_ND); the rest keep
    their activations bit for bit."""

    def fn(hidden_BSD: Tensor, site: Site) -> Tensor:
        mask_BS = cols_mask(mask_BM, site, hidden_BSD.device)
        if not bool(mask_BS.any()):
            return hidden_BSD
        out = hidden_BSD.clone()
        out[mask_BS] = replacement(hidden_BSD[mask_BS]).to(out.dtype)
        return out

    return fn


def zero_ablation(mask_BM: Tensor) -> Edit:
    return where(mask_BM, torch.zeros_like)


def mean_ablation(mask_BM: Tensor, mean_D: Tensor) -> Edit:
    return where(mask_BM, lambda x_ND: mean_D.to(x_ND.device, x_ND.dtype).expand(x_ND.shape[0], -1))


def record(box: dict, key: str = "acts") -> Edit:
    """Stores the block's output of the first call (the full forward or the prefill) in box[key]."""

    def fn(hidden_BSD: Tensor, site: Site) -> Tensor:
        if site.step == 0:
            box[key] = hidden_BSD
        return hidden_BSD

    return fn


def leaf(box: dict, key: str = "x") -> Edit:
    """Makes the block's output a leaf that requires grad (box[key]): a grad-enabled forward then
    differentiates the logits with respect to the residual stream at this layer only."""

    def fn(hidden_BSD: Tensor, site: Site) -> Tensor:
        x_BSD = hidden_BSD.detach().requires_grad_(True)
        box[key] = x_BSD
        return x_BSD

    return fn
