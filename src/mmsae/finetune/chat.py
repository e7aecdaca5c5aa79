"""Chat records -> token batches whose labels keep only the assistant's tokens.

The prompt (with its images, through the model's processor) and the assistant's answer are tokenized
separately and concatenated, so the boundary is exact for every tokenizer: labels are -100 on every prompt,
image and padding token. Sequences are never truncated (truncation can cut image placeholder tokens and
break the image-feature count); a record longer than the limit is rejected with its length instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data import Reject
from ..data.sources import Record
from ..world.text import BOS, CHAT_TEMPLATE, EOS, IMAGE

IGNORE = -100
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
SEQ_KEYS = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids")
_WORLD_TURN = re.compile(r"(?:^|\s)(user|assistant|system) :")


def _content(text: str) -> list[dict]:
    """'<image> what is it ?' -> [{'type': 'image'}, {'type': 'text', 'text': 'what is it ?'}]."""
    out: list[dict] = []
    for j, part in enumerate(text.split(IMAGE)):
        if j:
            out.append({"type": "image"})
        if part.strip():
            out.append({"type": "text", "text": part.strip()})
    return out


def turns_of(rec: Record) -> list[tuple[str, str]]:
    """(role, text) turns of a record: its LLaVA `conversations` if the source kept them (meta), else its
    text in the world's chat format ('<s> user : <image> q assistant : a </s>')."""
    convs = rec.meta.get("conversations")
    if convs:
        turns = []
        for c in convs:
            role = ROLES.get(str(c.get("from", c.get("role", ""))).lower())
            if role is None:
                raise Reject(rec.id, f"unknown conversation role {c.get('from')!r}")
            turns.append((role, str(c.get("value", ""))))
        return turns
    text = rec.text.replace(BOS, " ").replace(EOS, " ")
    marks = list(_WORLD_TURN.finditer(text))
    return [(m.group(1), text[m.end() : marks[j + 1].start() if j + 1 < len(marks) else len(text)].strip())
            for j, m in enumerate(marks)]


def messages_of(rec: Record) -> tuple[list[dict], list[dict]]:
    """(prompt messages, [the final assistant message]); earlier assistant turns stay context."""
    turns = turns_of(rec)
    if not turns or turns[-1][0] != "assistant":
        raise Reject(rec.id, "no assistant turn (the record must end with the answer to learn)")
    n_ph = sum(t.count(IMAGE) for _, t in turns)
    if rec.images and n_ph == 0:  # LLaVA's convention: images without a placeholder go first
        turns[0] = (turns[0][0], " ".join([IMAGE] * len(rec.images)) + " " + turns[0][1])
    elif n_ph != len(rec.images):
        raise Reject(rec.id, f"{n_ph} {IMAGE} placeholders for {len(rec.images)} images")
    msgs = [{"role": r, "content": _content(t)} for r, t in turns]
    return msgs[:-1], msgs[-1:]


@dataclass
class Item:
    """One encoded record: the processor's prompt tensors (batch of 1) and the answer's token ids."""

    id: str
    prompt: dict[str, torch.Tensor]
    answer: list[int]

    @property
    def length(self) -> int:
        return int(self.prompt["input_ids"].shape[1]) + len(self.answer)


def encode(rec: Record, processor, template: str | None, max_length: int, expand=None) -> Item:
    """A record through the chat template and the processor; Reject with the reason if it cannot train.

    `expand(text, images)`: the model family's image placeholder for the world template's neutral `<image>`
    (an adapter's `expand_text`; family quirks live in mmsae.models)."""
    prompt_msgs, answer_msgs = messages_of(rec)
    try:
        prompt = processor.apply_chat_template(prompt_msgs, chat_template=template, tokenize=False,
                                               add_generation_prompt=True)
        full = processor.apply_chat_template(prompt_msgs + answer_msgs, chat_template=template, tokenize=False)
    except Exception as e:  # a template that cannot render this conversation (roles, alternation, ...)
        raise Reject(rec.id, f"chat template failed: {e}") from None
    if not full.startswith(prompt):
        raise Reject(rec.id, "the chat template's full conversation does not begin with its prompt")
    answer_text = full[len(prompt) :]
    if expand is not None:
        prompt = expand(prompt, rec.images)
    try:
        enc = processor(images=rec.images or None, text=[prompt], add_special_tokens=False, return_tensors="pt")
    except Exception as e:  # the processor rejects the image(s): size, mode, count ...
        raise Reject(rec.id, f"processor rejected the record: {type(e).__name__}: {e}") from None
    answer = processor.tokenizer(answer_text, add_special_tokens=False)["input_ids"]
    item = Item(rec.id, dict(enc), list(answer))
    if not answer:
        raise Reject(rec.id, "the assistant turn is empty after the chat template")
    if item.length > max_length:
        raise Reject(rec.id, f"sequence of {item.length} tokens exceeds max_length {max_length} "
                             "(not truncated: that would cut image tokens or the answer)")
    return item


def world_template() -> str:
    return CHAT_TEMPLATE


def collate(items: list[Item], pad_id: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Right-padded model inputs and labels (-100 on prompt, image and padding tokens)."""
    length = max(it.length for it in items)
    ids = torch.full((len(items), length), pad_id, dtype=torch.long)
    labels = torch.full((len(items), length), IGNORE, dtype=torch.long)
    seq: dict[str, torch.Tensor] = {k: torch.zeros((len(items), length), dtype=torch.long)
                                    for k in SEQ_KEYS[1:] if k in items[0].prompt}
    for i, it in enumerate(items):
        p = it.prompt["input_ids"][0]
        row = torch.cat([p, torch.tensor(it.answer, dtype=torch.long)])
        ids[i, : len(row)] = row
        labels[i, len(p) : len(row)] = torch.tensor(it.answer, dtype=torch.long)
        for k in seq:  # the answer is text: attention 1, token types 0
            seq[k][i, : len(p)] = it.prompt[k][0]
            if k == "attention_mask":
                seq[k][i, len(p) : len(row)] = 1
    inputs = {"input_ids": ids, **seq}
    for k in items[0].prompt:
        if k not in SEQ_KEYS:  # pixel values, image sizes, grids: stacked along their first axis
            inputs[k] = torch.cat([it.prompt[k] for it in items])
    return inputs, labels


def answer_loss_sum(model, inputs: dict[str, torch.Tensor], labels_BS: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the assistant tokens (position t predicts t+1) and their count."""
    logits_BSV = model(**inputs).logits
    target = labels_BS[:, 1:]
    keep = target != IGNORE
    loss = F.cross_entropy(logits_BSV[:, :-1][keep].float(), target[keep], reduction="sum")
    return loss, int(keep.sum())
