"""VQA accuracy per question class through the public HF path (chat template, processor, greedy generate)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch


def normalise(text: str) -> str:
    return " ".join(text.replace(" - ", "-").split())


@torch.no_grad()
def vqa_accuracy(model, processor, items: list[tuple], template: str | None = None, batch: int = 32,
                 max_new_tokens: int = 4) -> dict:
    """Exact-match accuracy over (image, QA) items: overall and per QA type."""
    model.eval()
    tok = processor.tokenizer
    side, tok.padding_side = tok.padding_side, "left"
    answers: list[str] = []
    try:
        for i in range(0, len(items), batch):
            chunk = items[i : i + batch]
            prompts = [processor.apply_chat_template(
                [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": qa.question}]}],
                chat_template=template, tokenize=False, add_generation_prompt=True) for _, qa in chunk]
            enc = processor(images=[im for im, _ in chunk], text=prompts, add_special_tokens=False,
                            padding=True, return_tensors="pt").to(model.device)
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            answers += [normalise(tok.decode(r, skip_special_tokens=True)) for r in gen[:, enc["input_ids"].shape[1] :]]
    finally:
        tok.padding_side = side
    per: dict[str, list[bool]] = defaultdict(list)
    for (_, qa), a in zip(items, answers):
        per[qa.type].append(a == qa.answer)
    per_class = {k: float(np.mean(v)) for k, v in sorted(per.items())}
    return {"accuracy": float(np.mean([a == qa.answer for (_, qa), a in zip(items, answers)])),
            "class_mean": float(np.mean(list(per_class.values()))), "per_class": per_class, "questions": len(items)}
