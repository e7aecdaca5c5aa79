"""IFD (instruction-following difficulty, Cherry LLM): the answer's loss with the instruction divided by its
loss without it, from a base model; the data-selection peer SAE-V compares with.

    ifd = mean CE(answer | image + question) / mean CE(answer | empty user turn)

Cherry keeps the records of highest IFD but drops IFD >= 1 (there the instruction does not help: a sign of
misalignment), so `selection_scores` ranks those last.
"""

from __future__ import annotations

import torch

from ..data import Reject
from ..data.sources import Record
from .chat import Item, answer_loss_sum, collate, encode


def _mean_losses(model, processor, items: list[Item]) -> list[float]:
    """Each record's mean answer-token loss (one record a forward: no padding enters any mean)."""
    pad = processor.tokenizer.pad_token_id
    out: list[float] = []
    for it in items:
        inputs, labels = collate([it], pad)
        inputs = {k: v.to(model.device) for k, v in inputs.items()}
        s, n = answer_loss_sum(model, inputs, labels.to(model.device))
        out.append(float(s) / n)
    return out


@torch.no_grad()
def ifd_scores(model, processor, records: list[Record], template: str | None = None, max_length: int = 1 << 30
               ) -> tuple[dict[str, float], list[dict]]:
    """IFD per record id, and the rejects (records that cannot be encoded, with the reason)."""
    model.eval()
    cond, bare, ids, rejects = [], [], [], []
    for rec in records:
        try:
            item = encode(rec, processor, template, max_length)
            answer = rec.meta.get("conversations", [])[-1:] if rec.meta.get("conversations") else None
            if answer is None:
                raise Reject(rec.id, "IFD needs the record's conversations (a jsonl source)")
            empty = Record(rec.id, [], "", meta={"conversations": [{"from": "human", "value": ""}, *answer]})
            bare_item = encode(empty, processor, template, max_length)
        except Reject as r:
            rejects.append({"id": r.id, "reason": r.reason})
            continue
        cond.append(item)
        bare.append(bare_item)
        ids.append(rec.id)
    c, b = _mean_losses(model, processor, cond), _mean_losses(model, processor, bare)
    return {i: x / max(y, 1e-8) for i, x, y in zip(ids, c, b)}, rejects


def selection_scores(ifd: dict[str, float]) -> dict[str, float]:
    """Higher = keep (Cherry's rule): IFD itself below 1; records with IFD >= 1 below every other."""
    return {k: (v if v < 1 else -v) for k, v in ifd.items()}
