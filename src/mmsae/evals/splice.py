"""x̂ spliced into the LMM's forward pass: CE / KL loss recovered and delta LM loss per token split.

For each batch of records the model runs once clean (logits cached) and then, for each split
(all = text + image tokens, text, image), with the residual stream after block `layer` replaced at
that split's positions by 1) the SAE's reconstruction, 2) zeros, 3) the mean activation. Special
tokens (BOS, separators, padding) keep their clean activations in every split, as they are not SAE
training rows by default. Losses are next-token cross-entropies scored where the *next* token is a
real text token (predicting an image placeholder, a special token or padding is not language
modelling), the same positions for every split, so the splits differ only in what was replaced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmsae.evals.lm import SpliceMetrics
from mmsae.evals.metrics import SPLITS
from mmsae.models.intervene import Edit, record, where
from mmsae.models.table import IMAGE, TEXT

log = logging.getLogger(__name__)

SPLIT_MODALITIES = {"all": (TEXT, IMAGE), "text": (TEXT,), "image": (IMAGE,)}
DEFINITIONS = ("split = positions whose residual stream is replaced (all = text + image tokens; special tokens never); "
               "CE/KL scored on positions whose next token is a real text token (inside an answer when a marker is given); KL(clean || spliced); "
               "recovered = (CE_ablated - CE_sae) / (CE_ablated - CE_clean)")


def split_masks(tables: Sequence[Any], seq_len: int) -> dict[str, Tensor]:
    """{split: bool [B, S]} from the token tables' modality (padding is SPECIAL in the tables)."""
    modality_BS = np.stack([np.asarray(t.modality)[:seq_len] for t in tables])
    return {s: torch.from_numpy(np.isin(modality_BS, codes)) for s, codes in SPLIT_MODALITIES.items()}


def answer_spans(input_ids_BS: Tensor, modality_BS: Tensor, marker_ids: Sequence[int]) -> Tensor:
    """bool [B, S]: tokens after each occurrence of the marker ids up to the next special token
    (EOS / end-of-turn), i.e. the answers of a chat whose assistant turns open with the marker."""
    ids = input_ids_BS.numpy()
    special = (modality_BS != TEXT) & (modality_BS != IMAGE)
    out = torch.zeros(ids.shape, dtype=torch.bool)
    m = len(marker_ids)
    for b in range(ids.shape[0]):
        windows = np.lib.stride_tricks.sliding_window_view(ids[b], m) if ids.shape[1] >= m else np.zeros((0, m))
        for start in np.flatnonzero((windows == np.asarray(marker_ids)).all(1)):
            stop = start + m
            nxt = torch.nonzero(special[b, stop:])
            end = stop + int(nxt[0]) if len(nxt) else ids.shape[1]
            out[b, stop:end] = True
    return out


def next_token_targets(input_ids_BS: Tensor, tables: Sequence[Any],
                       marker_ids: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    """labels_BS[:, t] = input_ids[:, t+1]; mask_BS where that next token is a real text token (and,
    with `marker_ids`, inside an answer span: see `answer_spans`)."""
    modality_BS = torch.from_numpy(np.stack([np.asarray(t.modality) for t in tables]))
    scored_BS = modality_BS == TEXT
    if marker_ids:
        scored_BS &= answer_spans(input_ids_BS, modality_BS, marker_ids)
    labels_BS = torch.zeros_like(input_ids_BS)
    labels_BS[:, :-1] = input_ids_BS[:, 1:]
    mask_BS = torch.zeros(input_ids_BS.shape, dtype=torch.bool)
    mask_BS[:, :-1] = scored_BS[:, 1:]
    return labels_BS, mask_BS


def reconstruct(sae: Any, x_ND: Tensor) -> Tensor:
    """The SAE's x̂ of raw activations (saved SAEs have their input normalisation folded in)."""
    return sae.decode(sae.encode(x_ND.float()))


def splice_fn(mask_BS: Tensor, replacement: Callable[[Tensor], Tensor]) -> Edit:
    """An intervention (`adapter.intervene`): positions in mask_BS get replacement(acts_ND), the rest stay."""
    return where(mask_BS, replacement)


def _encode(adapter: Any, batch: list[tuple[int, Any]], reject: Callable[[int, str, str], None]):
    """(kept records, Encoded | None): records the processor chokes on are rejected, the rest go on."""
    from mmsae.models import Prompt

    try:
        return batch, adapter.encode([Prompt(rec.images, rec.text) for _, rec in batch])
    except Exception as e:
        if len(batch) == 1:
            reject(batch[0][0], batch[0][1].id, f"encode failed: {type(e).__name__}: {e}")
            return [], None
    good = [b for b in batch if _encode(adapter, [b], reject)[1] is not None]
    return (good, adapter.encode([Prompt(r.images, r.text) for _, r in good])) if good else ([], None)


class _Splicer:
    """Runs one encoded batch through the model clean and spliced, feeding SpliceMetrics."""

    def __init__(self, adapter: Any, sae: Any, layer: int, mean_D: Tensor | None, marker_ids: list[int] | None):
        self.adapter, self.sae, self.layer, self.mean_D, self.marker_ids = adapter, sae, layer, mean_D, marker_ids
        self.metrics = SpliceMetrics()
        self.replaced = dict.fromkeys(SPLITS, 0)

    def _logits(self, inputs: dict, fn: Edit) -> Tensor:
        with self.adapter.intervene(self.layer, fn):
            return self.adapter.forward_logits(inputs)

    def run(self, enc: Any) -> None:
        inputs = self.adapter._to_device(enc.inputs)
        seq_len = enc.inputs["input_ids"].shape[1]
        labels_BS, loss_BS = next_token_targets(enc.inputs["input_ids"].cpu(), enc.tables, self.marker_ids)
        if not bool(loss_BS.any()):
            return
        box: dict[str, Tensor] = {}
        clean_BSV = self._logits(inputs, record(box))
        loss_dev = loss_BS.to(clean_BSV.device)
        clean_NV = clean_BSV[loss_dev][None]
        labels_N = labels_BS.to(clean_BSV.device)[loss_dev][None]
        ones = torch.ones(labels_N.shape, dtype=torch.bool, device=labels_N.device)
        masks = split_masks(enc.tables, seq_len)
        mean_D = self.mean_D
        if mean_D is None:  # no store: the mean of this batch's text + image tokens
            mean_D = box["acts"][masks["all"].to(box["acts"].device)].double().mean(0)
        mean_D = mean_D.to(box["acts"].device, torch.float32)
        replacements = {
            "sae": lambda x_ND: reconstruct(self.sae, x_ND),
            "zero": torch.zeros_like,
            "mean": lambda x_ND: mean_D.expand(x_ND.shape[0], -1),
        }
        for split in SPLITS:
            mask_BS = masks[split]
            self.replaced[split] += int(mask_BS.sum())
            spliced = {}
            for name, repl in replacements.items():
                if bool(mask_BS.any()):
                    spliced[name] = self._logits(inputs, splice_fn(mask_BS, repl))[loss_dev][None]
                else:  # nothing to replace: the spliced run is the clean run
                    spliced[name] = clean_NV
            self.metrics.update(clean_NV, spliced["sae"], labels_N, ones, split=split,
                                zero_BSV=spliced["zero"], mean_BSV=spliced["mean"])


@torch.no_grad()
def evaluate_splice(adapter: Any, sae: Any, source: Any, layer: int, records: Sequence[int] | int,
                    batch_size: int = 4, mean_D: Tensor | None = None, answer_marker: str | None = None,
                    progress: bool = False) -> dict[str, Any]:
    """Splice metrics over `records` (indices into `source`, or the first N) -> {split: metrics, ...}.

    Each split reports ce_clean, ce_sae, ce_zero, ce_mean, kl_sae, kl_zero, kl_mean, delta_lm_loss,
    ce_loss_recovered_zero/mean, n_tokens (scored positions) and n_replaced (replaced positions).
    `mean_D` is the mean-ablation vector (a store manifest's mean); None: each batch's own mean.
    `answer_marker` (e.g. "assistant :"): score only answer tokens, those after the marker up to the
    next special token; the marker is tokenized alone, so give it as the tokenizer splits it in context.
    None: score every text token."""
    from mmsae.store.stream import load

    adapter.check_layer(layer)
    if sae.cfg.d_in != adapter.d_model:
        raise ValueError(f"the SAE's d_in {sae.cfg.d_in} does not match the model's width {adapter.d_model}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(records, int):
        records = range(min(records, len(source)))
    marker_ids = None
    if answer_marker:
        marker_ids = adapter.tokenizer(answer_marker, add_special_tokens=False)["input_ids"]
        if not marker_ids:
            raise ValueError(f"answer marker {answer_marker!r} tokenizes to nothing")
    sae = sae.to(adapter.device).eval()
    rejects: list[dict[str, Any]] = []

    def reject(i: int, sid: str, reason: str) -> None:
        rejects.append({"index": i, "id": sid, "reason": reason})
        log.warning("splice: skipped record %d (%s): %s", i, sid, reason)

    splicer = _Splicer(adapter, sae, layer, None if mean_D is None else torch.as_tensor(mean_D), marker_ids)
    from rich.progress import Progress

    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("splice", total=len(records))
        for lo in range(0, len(records), batch_size):
            idx = records[lo : lo + batch_size]
            batch = [(i, rec) for i in idx if (rec := load(source, i, reject)) is not None]
            enc = _encode(adapter, batch, reject)[1] if batch else None
            if enc is not None:
                splicer.run(enc)
            bar.update(task, advance=len(idx))
    out: dict[str, Any] = {s: {"n_tokens": 0} for s in SPLITS}
    for split, values in splicer.metrics.compute().items():
        out[split] = values
    for split in SPLITS:
        out[split]["n_replaced"] = splicer.replaced[split]
    out.update(layer=layer, n_records=len(records), n_rejects=len(rejects), rejects=rejects,
               mean_ablation="store mean" if mean_D is not None else "per-batch mean", answer_marker=answer_marker,
               definitions=DEFINITIONS)
    if out["all"]["n_tokens"] == 0:
        log.warning("splice: no token was scored (no text token%s)", f" after {answer_marker!r}" if answer_marker else "")
    return out


def format_splice_table(splice: dict[str, Any]) -> str:
    cols = ("n_tokens", "ce_clean", "ce_sae", "delta_lm_loss", "kl_sae", "ce_loss_recovered_zero", "ce_loss_recovered_mean")
    heads = ("n_tokens", "ce_clean", "ce_sae", "delta_lm", "kl_sae", "recov_zero", "recov_mean")
    lines = [f"{'splice':<6} " + " ".join(f"{h:>11}" for h in heads)]
    for split in SPLITS:
        m = splice.get(split, {})
        if not m.get("n_tokens"):
            continue
        lines.append(f"{split:<6} " + " ".join(f"{m[c]:>11.4g}" if isinstance(m[c], float) else f"{m[c]:>11}" for c in cols))
    return "\n".join(lines)
