"""The running state of an index build: feature statistics, top-N images and text tokens per feature,
and the sparse patch maps of the images that are currently in some top-N.

Everything lives on one device as tensors; `state_dict()` moves it to the CPU for an atomic save.
Memory is bounded by the number of features times N (times the patches an image has), never by the
number of tokens seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mmsae.models.table import IMAGE, SPECIAL, TEXT

from .topn import RunningTopN

# Keys order items by sample first, so that ties go to the earlier sample.
IMAGE_BITS = 12  # image key = sample << 12 | image_index
POSITION_BITS = 20  # text key = sample << 20 | position
MAX_SAMPLE = 1 << 40
IMAGE_MARK = -2  # a whole image inside a text context window
NO_TOKEN = -1  # beyond the sequence


def image_key(sample: int | Tensor | np.ndarray, image_index):
    return (sample << IMAGE_BITS) | image_index


def split_image_key(key):
    return key >> IMAGE_BITS, key & ((1 << IMAGE_BITS) - 1)


def text_key(sample, position):
    return (sample << POSITION_BITS) | position


def split_text_key(key):
    return key >> POSITION_BITS, key & ((1 << POSITION_BITS) - 1)


def key_problem(captured) -> str | None:
    """Why a captured record cannot be keyed in the index (None when it can)."""
    t = captured.table
    if captured.index >= MAX_SAMPLE:
        return f"record index {captured.index} >= {MAX_SAMPLE}"
    if len(t) and int(t.position.max()) >= 1 << POSITION_BITS:
        return f"sequence of {int(t.position.max()) + 1} tokens > {1 << POSITION_BITS} (index key limit)"
    if len(t) and int(t.image_index.max()) >= 1 << IMAGE_BITS:
        return f"{int(t.image_index.max()) + 1} images > {1 << IMAGE_BITS} (index key limit)"
    return None


@dataclass
class TokenBatch:
    """Per-token metadata of one batch of captured sequences, concatenated in capture order."""

    sample_T: Tensor  # record index
    modality_T: Tensor  # TEXT / IMAGE / SPECIAL
    position_T: Tensor
    slot_T: Tensor  # image slot in the batch for IMAGE tokens, else -1
    ord_T: Tensor  # index of the token among its image's IMAGE tokens, else -1
    disp_T: Tensor  # index into display_ids for non-image tokens, else -1
    lo_T: Tensor  # the token's sequence spans display_ids[lo:hi]
    hi_T: Tensor
    display_ids: Tensor  # token ids with each image collapsed to IMAGE_MARK (for text contexts)
    slot_key: Tensor  # [I] image key of each slot
    slot_tokens: Tensor  # [I] number of IMAGE tokens of each slot


def token_batch(captured: list, device: torch.device) -> TokenBatch:
    """Build the per-token metadata of a batch from the captured records' token tables, with array
    operations over the whole batch (it runs beside the forward: Python loops would hold the GIL)."""
    for c in captured:
        if key_problem(c) is not None:
            raise ValueError(f"record {c.id}: {key_problem(c)}")
    z = np.zeros(0, np.int64)
    S_B = np.array([len(c.table) for c in captured], np.int64)
    cat = lambda get: np.concatenate([get(c.table) for c in captured]).astype(np.int64) if captured else z  # noqa: E731
    mod_T, img_T, pos_T, tok_T = cat(lambda t: t.modality), cat(lambda t: t.image_index), cat(lambda t: t.position), \
        cat(lambda t: t.token_id)
    T = len(mod_T)
    seq_T = np.repeat(np.arange(len(captured)), S_B)
    sample_B = np.array([c.index for c in captured], np.int64)
    first_T = np.zeros(T, bool)
    first_T[np.cumsum(S_B)[:-1][S_B[1:] > 0] if len(S_B) > 1 else []] = True
    if T:
        first_T[0] = True
    # Image slots, in (record, image index) order; a token's ord is its rank among its slot's tokens.
    is_img_T = (mod_T == IMAGE) & (img_T >= 0)
    pair_I, inv_I = np.unique(seq_T[is_img_T] * (1 << IMAGE_BITS) + img_T[is_img_T], return_inverse=True)
    inv_I = inv_I.reshape(-1)
    slot_tokens = np.bincount(inv_I, minlength=len(pair_I)).astype(np.int64)
    ord_I = np.empty(len(inv_I), np.int64)
    order = np.argsort(inv_I, kind="stable")  # tokens of a slot stay in sequence order
    ord_I[order] = np.arange(len(inv_I)) - np.repeat(np.cumsum(slot_tokens) - slot_tokens, slot_tokens)
    slot_T, ord_T = np.full(T, -1, np.int64), np.full(T, -1, np.int64)
    slot_T[is_img_T], ord_T[is_img_T] = inv_I, ord_I
    slot_key = image_key(sample_B[pair_I >> IMAGE_BITS], pair_I & ((1 << IMAGE_BITS) - 1))
    # Display stream: every token outside images, and one mark per image (its run of tokens).
    in_image_T = img_T >= 0
    prev_T = np.concatenate([[False], in_image_T[:-1]]) & ~first_T
    shown_T = ~in_image_T | (in_image_T & ~prev_T)
    display_ids = np.where(in_image_T, IMAGE_MARK, tok_T)[shown_T]
    disp_T = np.full(T, -1, np.int64)
    disp_T[shown_T & ~in_image_T] = np.flatnonzero(~in_image_T[shown_T])
    n_shown_B = np.bincount(seq_T[shown_T], minlength=len(captured)).astype(np.int64)
    lo_B = np.cumsum(n_shown_B) - n_shown_B
    t = lambda a: torch.as_tensor(a, dtype=torch.int64, device=device)  # noqa: E731
    return TokenBatch(t(np.repeat(sample_B, S_B)), t(mod_T), t(pos_T), t(slot_T), t(ord_T), t(disp_T),
                      t(np.repeat(lo_B, S_B)), t(np.repeat(lo_B + n_shown_B, S_B)), t(display_ids), t(slot_key),
                      t(slot_tokens))


SELECTIONS = ("auto", "float32", "bfloat16", "int8")


def use_selection(sae, choice: str, device: torch.device) -> dict | None:
    """Set the dtype of a TopK SAE's selection product for the index, resolved as training resolves
    its `selection_dtype` (`mmsae.train.loop.choose_selection`); returns the choice and why (None for
    kinds without a selection product). Only kinds whose exact values decide among the low-precision
    product's candidates may use one: for them `encode_exact` gives the same codes at every dtype."""
    if choice not in SELECTIONS:
        raise ValueError(f"selection_dtype must be one of {SELECTIONS}, got {choice!r}")
    if not hasattr(sae, "selection_dtype"):
        return None
    from mmsae.train.loop import choose_selection

    if choice == "bfloat16" and not sae.refines_low_precision_selection:
        raise ValueError(f"selection_dtype bfloat16 needs the topk kind's refined selection, got kind {sae.cfg.kind!r}")
    chosen = choose_selection(choice, sae, device)
    sae.selection_dtype = getattr(torch, chosen["dtype"])
    return chosen


def _encode(sae, x_TD: Tensor):
    """Codes that do not depend on the selection product's dtype where the kind has one."""
    if getattr(sae, "refines_low_precision_selection", False):
        return sae.encode_exact(x_TD)
    return sae.encode(x_TD)


def sparse_entries(sae, acts_TD: Tensor, block: int) -> tuple[Tensor, Tensor, Tensor]:
    """(token, feature, activation) of every activation > 0, encoding `block` tokens at a time
    (a TopK encoder builds a dense [tokens, F] pre-activation; its codes stay sparse, [tokens, K])."""
    toks, feats, vals = [], [], []
    for s in range(0, acts_TD.shape[0], block):
        codes = _encode(sae, acts_TD[s:s + block])
        v = codes.values
        if codes.indices is None:
            tok, feat = torch.nonzero(v > 0, as_tuple=True)
            val = v[tok, feat]
        else:
            mask = v > 0
            tok = torch.arange(v.shape[0], device=v.device)[:, None].expand_as(v)[mask]
            feat, val = codes.indices[mask], v[mask]
        toks.append(tok + s)
        feats.append(feat.long())
        vals.append(val.float())
    if not toks:
        z = torch.zeros(0, dtype=torch.int64, device=acts_TD.device)
        return z, z, torch.zeros(0, device=acts_TD.device)
    return torch.cat(toks), torch.cat(feats), torch.cat(vals)


class IndexState:
    def __init__(self, n_latents: int, top_n: int, n_text: int, rank_by: str, context: tuple[int, int],
                 device: torch.device | str):
        if rank_by not in ("max", "mean"):
            raise ValueError(f"rank_by must be 'max' or 'mean', got {rank_by!r}")
        F = n_latents
        self.device = torch.device(device)
        self.rank_by = rank_by
        self.before, self.after = context
        width = self.before + 1 + self.after
        self.images = RunningTopN(F, top_n, {"max": ((), torch.float32), "mean": ((), torch.float32)}, device)
        self.texts = RunningTopN(F, max(n_text, 1), {"window": ((width,), torch.int32)}, device)
        self.n_text = n_text
        z = lambda dtype: torch.zeros(F, dtype=dtype, device=device)  # noqa: E731
        self.stats = {"n_fires": z(torch.int64), "n_image_fires": z(torch.int64), "n_text_fires": z(torch.int64),
                      "n_special_fires": z(torch.int64), "sum_act": z(torch.float64), "max_act": z(torch.float32)}
        self.counts = {"n_tokens": 0, "n_image_tokens": 0, "n_text_tokens": 0, "n_special_tokens": 0, "n_samples": 0}
        # Patch entries of (feature, image) pairs in the top-N; evicted pairs linger until compact().
        self.pool: dict[str, list[Tensor]] = {"feature": [], "key": [], "ord": [], "act": []}
        self.pool_live = 0  # entries after the last compaction
        self.pool_size = 0

    @torch.no_grad()
    def add_batch(self, captured: list, sae, sae_block: int) -> int:
        """Fold one batch of captured sequences in; returns its number of tokens."""
        if not captured:
            return 0
        tb = token_batch(captured, self.device)
        acts_TD = torch.cat([c.acts_SD.to(self.device) for c in captured])
        tok_E, feat_E, val_E = sparse_entries(sae, acts_TD, sae_block)
        mod_E = tb.modality_T[tok_E]
        self._stats(tb, feat_E, val_E, mod_E)
        self._images(tb, tok_E[mod_E == IMAGE], feat_E[mod_E == IMAGE], val_E[mod_E == IMAGE])
        if self.n_text > 0:
            self._texts(tb, tok_E[mod_E == TEXT], feat_E[mod_E == TEXT], val_E[mod_E == TEXT])
        self.counts["n_samples"] += len(captured)
        return int(acts_TD.shape[0])

    def _stats(self, tb: TokenBatch, feat_E: Tensor, val_E: Tensor, mod_E: Tensor) -> None:
        s, c = self.stats, self.counts
        ones = torch.ones_like(feat_E)
        s["n_fires"].index_add_(0, feat_E, ones)
        for name, code in (("n_image_fires", IMAGE), ("n_text_fires", TEXT), ("n_special_fires", SPECIAL)):
            m = mod_E == code
            s[name].index_add_(0, feat_E[m], ones[m])
        s["sum_act"].index_add_(0, feat_E, val_E.double())
        s["max_act"].scatter_reduce_(0, feat_E, val_E, "amax")
        c["n_tokens"] += int(tb.modality_T.numel())
        for name, code in (("n_image_tokens", IMAGE), ("n_text_tokens", TEXT), ("n_special_tokens", SPECIAL)):
            c[name] += int((tb.modality_T == code).sum())

    def _images(self, tb: TokenBatch, tok_E: Tensor, feat_E: Tensor, val_E: Tensor) -> None:
        n_slots = len(tb.slot_key)
        if len(tok_E) == 0 or n_slots == 0:
            return
        slot_E = tb.slot_T[tok_E]
        pair_u, inv_E = torch.unique(feat_E * n_slots + slot_E, return_inverse=True)
        max_u = torch.zeros(len(pair_u), device=self.device).scatter_reduce_(0, inv_E, val_E, "amax")
        sum_u = torch.zeros(len(pair_u), dtype=torch.float64, device=self.device).index_add_(0, inv_E, val_E.double())
        feat_u, slot_u = pair_u // n_slots, pair_u % n_slots
        # Means rounded to float32: the activations' own precision, and the same however summed.
        mean_u = (sum_u / tb.slot_tokens[slot_u].clamp_min(1)).float()
        key_u = tb.slot_key[slot_u]
        score_u = max_u if self.rank_by == "max" else mean_u
        kept_u = self.images.update(feat_u, score_u, key_u, {"max": max_u, "mean": mean_u})
        keep_mask_u = torch.zeros(len(pair_u), dtype=torch.bool, device=self.device)
        keep_mask_u[kept_u] = True
        keep_E = keep_mask_u[inv_E]
        if bool(keep_E.any()):
            self._pool_add(feat_E[keep_E], tb.slot_key[slot_E[keep_E]], tb.ord_T[tok_E[keep_E]], val_E[keep_E])

    def _texts(self, tb: TokenBatch, tok_E: Tensor, feat_E: Tensor, val_E: Tensor) -> None:
        if len(tok_E) == 0:
            return
        key_E = (tb.sample_T[tok_E] << POSITION_BITS) | tb.position_T[tok_E]
        offsets_W = torch.arange(-self.before, self.after + 1, device=self.device)

        def windows(idx: Tensor) -> dict[str, Tensor]:
            t = tok_E[idx]
            pos_CW = tb.disp_T[t][:, None] + offsets_W
            ok = (pos_CW >= tb.lo_T[t][:, None]) & (pos_CW < tb.hi_T[t][:, None])
            ids = tb.display_ids[pos_CW.clamp(0, max(len(tb.display_ids) - 1, 0))]
            return {"window": torch.where(ok, ids, torch.full_like(ids, NO_TOKEN)).int()}

        self.texts.update(feat_E, val_E, key_E, windows)

    # -- patch pool ---------------------------------------------------------------------------------
    def _pool_add(self, feat: Tensor, key: Tensor, ord_: Tensor, act: Tensor) -> None:
        for name, t in (("feature", feat.int()), ("key", key), ("ord", ord_.int()), ("act", act.float())):
            self.pool[name].append(t)
        self.pool_size += len(feat)
        if self.pool_size > max(1 << 22, 2 * self.pool_live):
            self.compact()

    def compact(self) -> None:
        """Drop the patch entries of evicted (feature, image) pairs; concatenate the rest."""
        if not self.pool["feature"]:
            return
        cat = {k: torch.cat(v) for k, v in self.pool.items()}
        live = self.images.contains(cat["feature"], cat["key"])
        self.pool = {k: [v[live]] for k, v in cat.items()}
        self.pool_live = self.pool_size = int(live.sum())

    def pool_tensors(self) -> dict[str, Tensor]:
        self.compact()
        if not self.pool["feature"]:
            z = torch.zeros(0, dtype=torch.int32)
            return {"feature": z, "key": z.long(), "ord": z, "act": z.float()}
        return {k: v[0].cpu() for k, v in self.pool.items()}

    def to(self, device: torch.device | str) -> IndexState:
        """Move everything (e.g. to the CPU before the final write)."""
        self.device = torch.device(device)
        self.images.to(device)
        self.texts.to(device)
        self.stats = {k: v.to(device) for k, v in self.stats.items()}
        self.pool = {k: [t.to(device) for t in v] for k, v in self.pool.items()}
        return self

    # -- save / load --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"images": self.images.state_dict(), "texts": self.texts.state_dict(),
                "stats": {k: v.cpu() for k, v in self.stats.items()}, "counts": dict(self.counts),
                "pool": self.pool_tensors()}

    def load_state_dict(self, state: dict) -> None:
        self.images.load_state_dict(state["images"])
        self.texts.load_state_dict(state["texts"])
        for k, v in self.stats.items():
            v.copy_(state["stats"][k])
        self.counts = dict(state["counts"])
        self.pool = {k: [v.to(self.device)] for k, v in state["pool"].items()}
        self.pool_live = self.pool_size = len(state["pool"]["feature"])

    def referenced(self) -> tuple[np.ndarray, np.ndarray]:
        """(image keys, text-context samples) currently in some top-N."""
        img = self.images.key_FN[self.images.filled()]
        txt = self.texts.key_FN[self.texts.filled()] >> POSITION_BITS
        return torch.unique(img).cpu().numpy(), torch.unique(txt).cpu().numpy()
