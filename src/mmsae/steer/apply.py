"""Steering through an SAE at one layer, as an intervention on the adapter (`models.intervene`):

    with steering(adapter, sae, layer, [Clamp(7, 20.0, tokens="image")], enc):
        logits_BSV = adapter.forward_logits(enc.inputs)              # or grad=True
        ids_BS = adapter.generate(enc.inputs, max_new_tokens=8)     # KV cache: every step steered

keep_error=True (default): x' = x̂_steered + (x − x̂), computed as x + Δ with Δ the change of the
decoded output ((value − z_j)·d_j for a clamp), so a no-op intervention leaves the residual stream
bit for bit as it was, and the SAE's reconstruction error stays in the model. keep_error=False:
x' = x̂_steered, the steered reconstruction alone (Multimodal-SAE's code), on the steered tokens.

Which columns are steered is decided per call from the call's columns (`site`): prompt columns from
the encoded batch's token tables, columns past the prompt are generated tokens, identified by the ids
fed at that column (so EOS and the pad ids of finished sequences can be skipped). The prefill, each
cached decoding step and a full forward over the grown sequence therefore edit the same positions
the same way: cached generation equals step-by-step recomputation (SAELens' tutorial hook skips the
length-1 steps; pyvene steers only the prompt; both differ from recomputation).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmsae.models.intervene import Site, cols_mask
from mmsae.models.table import IMAGE, SPECIAL, TEXT
from mmsae.steer.interventions import KINDS, Add, AddVector, Clamp, Scale


@dataclass
class _Entry:
    """One intervention bound to the batch: the examples it applies to, its prompt columns [B, W] and
    whether it also covers generated columns."""

    op: Any
    rows_B: Tensor
    prompt_BW: Tensor
    generated: bool


def per_example(interventions: Sequence, batch_size: int) -> list[list]:
    """A shared list (every example gets it) or a list of lists (one per example) -> B lists."""
    items = list(interventions)
    if all(isinstance(i, (list, tuple)) for i in items) and items:
        if len(items) != batch_size:
            raise ValueError(f"interventions has {len(items)} per-example lists for a batch of {batch_size} examples")
        nested = [list(i) for i in items]
    elif all(isinstance(i, KINDS) for i in items):
        nested = [items] * batch_size
    else:
        bad = [i for i in items if not isinstance(i, (*KINDS, list, tuple))]
        raise ValueError("interventions must be a list of Clamp/Add/Scale/AddVector or one such list per example, "
                         + (f"got an item {bad[0]!r}" if bad else "not a mix of lists and interventions"))
    for b, ops in enumerate(nested):
        for op in ops:
            if not isinstance(op, KINDS):
                raise ValueError(f"example {b}: {op!r} is not a Clamp, Add, Scale or AddVector")
    return nested


def _special_ids(adapter) -> list[int]:
    """Ids a generated token is left alone for: the tokenizer's specials, the family's structural ids
    and the generation config's EOS / pad ids (the same set the token table calls SPECIAL)."""
    special = set(adapter.tokenizer.all_special_ids) | set(adapter.extra_special_ids())
    gen = getattr(adapter.model, "generation_config", None)
    for name in ("eos_token_id", "pad_token_id"):
        ids = getattr(gen, name, None) if gen is not None else None
        special |= {int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids]) if i is not None}
    special.discard(adapter.image_token_id)
    return sorted(special)


class _Plan:
    """The validated interventions of one steering block and the edit that applies them."""

    def __init__(self, adapter, sae, layer: int, interventions, encoded, keep_error: bool, steer_special: bool):
        adapter.check_layer(layer)
        if int(sae.cfg.d_in) != adapter.d_model:
            raise ValueError(f"the SAE's d_in {sae.cfg.d_in} does not match the model's width {adapter.d_model} "
                             f"({adapter.family}, layer {layer})")
        self.sae, self.keep_error, self.steer_special = sae, keep_error, steer_special
        self.B = len(encoded.tables)
        self.W = int(encoded.inputs["input_ids"].shape[1])
        nested = per_example(interventions, self.B)
        n_latents = int(sae.cfg.n_latents)
        for ops in nested:
            for op in ops:
                if isinstance(op, AddVector):
                    if op.vector.shape[0] != adapter.d_model:
                        raise ValueError(f"AddVector's vector has {op.vector.shape[0]} entries, the model's width is {adapter.d_model}")
                elif op.feature >= n_latents:
                    raise ValueError(f"feature {op.feature} is out of range: the SAE has {n_latents} latents, "
                                     f"valid features are 0..{n_latents - 1}")
        modality_BW = np.stack([np.asarray(t.modality)[: self.W] for t in encoded.tables])
        mask = encoded.inputs.get("attention_mask")
        real_BW = torch.ones(self.B, self.W, dtype=torch.bool) if mask is None else mask.cpu().bool()
        special_BW = torch.from_numpy(modality_BW == SPECIAL) & real_BW  # padding is never steered
        text_BW = torch.from_numpy(modality_BW == TEXT) | (special_BW if steer_special else False)
        self.sets = {"image": torch.from_numpy(modality_BW == IMAGE), "text": text_BW}
        self.sets["prompt"] = self.sets["all"] = self.sets["image"] | text_BW
        self.sets["generated"] = torch.zeros(self.B, self.W, dtype=torch.bool)
        self.entries = self._bind(nested)
        self.special_ids = _special_ids(adapter)
        self.features = sorted({e.op.feature for e in self.entries if not isinstance(e.op, AddVector)})
        self.needs_codes = not keep_error or any(isinstance(e.op, (Clamp, Scale)) for e in self.entries)

    def _prompt_mask(self, tokens) -> Tensor:
        if isinstance(tokens, str):
            return self.sets[tokens]
        if tuple(tokens.shape) != (self.B, self.W):
            raise ValueError(f"a tokens mask must cover the padded prompt: shape ({self.B}, {self.W}), got {tuple(tokens.shape)}")
        mask_BW = tokens.cpu()
        return mask_BW if self.steer_special else mask_BW & self.sets["prompt"]

    def _bind(self, nested: list[list]) -> list[_Entry]:
        shared = all(ops is nested[0] for ops in nested)
        groups = [(nested[0], torch.ones(self.B, dtype=torch.bool), "the batch")] if shared else [
            (ops, torch.arange(self.B) == b, f"example {b}") for b, ops in enumerate(nested)]
        entries = []
        for ops, rows_B, where in groups:
            for op in ops:
                prompt_BW = self._prompt_mask(op.tokens) & rows_B[:, None]
                generated = isinstance(op.tokens, str) and op.tokens in ("generated", "all")
                if not generated and not bool(prompt_BW.any()):
                    counts = {k: int((self.sets[k] & rows_B[:, None]).sum()) for k in ("image", "text")}
                    raise ValueError(f"{type(op).__name__}'s tokens={_show(op.tokens)} selects no token of {where} "
                                     f"(it has {counts['image']} image and {counts['text']} text tokens)")
                entries.append(_Entry(op, rows_B, prompt_BW, generated))
        return entries

    # -- the edit, on every forward call ---------------------------------------------------------
    def mask(self, entry: _Entry, site: Site, device) -> Tensor:
        """bool [B, S]: the positions of this call the entry steers."""
        mask_BS = cols_mask(entry.prompt_BW, site, device)
        if entry.generated and site.stop > self.W:
            cols_S = torch.arange(site.start, site.stop, device=device)
            gen_BS = (cols_S >= self.W)[None, :] & entry.rows_B.to(device)[:, None]
            ids_BS = site.input_ids_BS
            if not self.steer_special and ids_BS is not None:
                gen_BS = gen_BS & ~torch.isin(ids_BS.to(device), torch.tensor(self.special_ids, device=device))
            mask_BS = mask_BS | gen_BS
        return mask_BS

    def edit(self, hidden_BSD: Tensor, site: Site) -> Tensor:
        if hidden_BSD.shape[0] != self.B:
            raise ValueError(f"steering was set up for a batch of {self.B} examples but the model ran {hidden_BSD.shape[0]} "
                             "(beam search and num_return_sequences > 1 are not supported)")
        device = hidden_BSD.device
        masks = [self.mask(e, site, device) for e in self.entries]
        if not masks:
            return hidden_BSD
        union_BS = torch.stack(masks).any(0)
        if not bool(union_BS.any()):
            return hidden_BSD
        x_ND = hidden_BSD[union_BS].to(self.sae.W_dec.dtype)
        new_ND = self._steer(x_ND, [m[union_BS] for m in masks])
        out_BSD = hidden_BSD.clone()
        out_BSD[union_BS] = new_ND.to(hidden_BSD.dtype)
        return out_BSD

    def _steer(self, x_ND: Tensor, sel: list[Tensor]) -> Tensor:
        """x' for the N steered rows; sel[i] marks the rows entry i steers."""
        N = x_ND.shape[0]
        codes = self.sae.encode(x_ND) if self.needs_codes else None
        col = {f: i for i, f in enumerate(self.features)}
        z_NJ = _feature_values(codes, self.features) if codes is not None else None
        # coef_NJ = z_steered − z, kept directly (not as a difference of values) so that a no-op is exactly 0
        coef = [x_ND.new_zeros(N) for _ in self.features]
        vector_ND = None
        for entry, sel_N in zip(self.entries, sel):
            op = entry.op
            if isinstance(op, AddVector):
                add_ND = sel_N[:, None] * op.vector.to(x_ND.device, x_ND.dtype)[None, :]
                vector_ND = add_ND if vector_ND is None else vector_ND + add_ND
                continue
            j = col[op.feature]
            if isinstance(op, Add):
                coef[j] = coef[j] + sel_N * float(op.scale)
            elif isinstance(op, Clamp):
                coef[j] = torch.where(sel_N, float(op.value) - z_NJ[:, j], coef[j])
            else:  # Scale: (z + c)·f − z = c·f + z·(f − 1)
                coef[j] = torch.where(sel_N, coef[j] * float(op.factor) + z_NJ[:, j] * (float(op.factor) - 1.0), coef[j])
        delta_ND = x_ND.new_zeros(x_ND.shape)
        if self.features:
            W_JD = self.sae.W_dec[torch.tensor(self.features, device=x_ND.device)]
            delta_ND = torch.stack(coef, 1) @ W_JD.to(x_ND.dtype)
        if vector_ND is not None:
            delta_ND = delta_ND + vector_ND
        base_ND = x_ND if self.keep_error else self.sae.decode(codes).to(x_ND.dtype)
        return base_ND + delta_ND


def _feature_values(codes, features: list[int]) -> Tensor:
    """z [N, J] of the given features from sparse (TopK) or dense codes."""
    if not features:
        return codes.values.new_zeros(codes.values.shape[0], 0)
    feats_J = torch.tensor(features, device=codes.values.device)
    if codes.indices is None:
        return codes.values[:, feats_J]
    hit_NKJ = codes.indices[:, :, None] == feats_J[None, None, :]
    return (codes.values[:, :, None] * hit_NKJ).sum(1)


def _show(tokens) -> str:
    return repr(tokens) if isinstance(tokens, str) else f"mask of {int(tokens.sum())} tokens"


@contextlib.contextmanager
def steering(adapter, sae, layer: int, interventions: Sequence, encoded, *, keep_error: bool = True,
             steer_special: bool = False) -> Iterator[None]:
    """Within the block, forward_logits (plain or grad=True) and generate on `encoded`'s batch run
    with `interventions` applied at the output of decoder block `layer`.

    `interventions`: a list for every example, or one list per example (an empty list leaves that
    example alone). Everything is validated before the block is entered. The SAE is moved to the
    model's device; its parameters do not require grad inside the block (gradients flow through it
    to the residual stream only)."""
    plan = _Plan(adapter, sae, layer, interventions, encoded, keep_error, steer_special)
    sae.to(adapter.device)
    flags = [(p, p.requires_grad) for p in sae.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        with adapter.intervene(layer, plan.edit):
            yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
