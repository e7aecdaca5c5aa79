"""Teacher-forced training of a LLaVA model from precomputed or live vision features.

The zoo trains the projector and decoder directly on (features, token ids) because re-running the frozen
vision tower every step would double the cost on a CPU; evaluation always goes through the public
Hugging Face forward with pixel values, so the two paths are checked against each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import LlavaForConditionalGeneration, PreTrainedTokenizerFast

from ..finetune.loop import cosine_lr  # noqa: F401  (the zoo's stages schedule with the one loop's)

IGNORE = -100


@dataclass
class Sequence:
    ids: list[int]  # image placeholders already expanded to one id per image token
    labels: list[int]  # IGNORE where no loss is taken


def build_sequence(
    tok: PreTrainedTokenizerFast, turns: list[tuple[str, str]], image_tokens: int
) -> Sequence:
    """Token ids and labels of a chat: loss on every answer chunk (answer words and </s>)."""
    image_id = tok.convert_tokens_to_ids("<image>")
    chunks = tok([c for t in turns for c in t], add_special_tokens=False)["input_ids"]
    ids: list[int] = []
    labels: list[int] = []
    for j, chunk in enumerate(chunks):
        expanded = [x for t in chunk for x in ([t] * image_tokens if t == image_id else [t])]
        ids += expanded
        labels += expanded if j % 2 else [IGNORE] * len(expanded)
    return Sequence(ids, labels)


def lm_loss(
    model: LlavaForConditionalGeneration, feats_NV: torch.Tensor, seqs: list[Sequence], image_id: int, pad_id: int
) -> tuple[torch.Tensor, float]:
    """Cross-entropy on answer tokens and the share of answer tokens predicted exactly.

    feats_NV holds the vision features of every image token of the batch, in reading order.
    """
    length = max(len(s.ids) for s in seqs)
    ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), length), IGNORE, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s.ids)] = torch.tensor(s.ids)
        labels[i, : len(s.labels)] = torch.tensor(s.labels)
    attn = ids != pad_id
    embeds = model.model.language_model.get_input_embeddings()(ids)
    image_pos = ids == image_id
    if int(image_pos.sum()) != feats_NV.shape[0]:
        raise ValueError(f"{int(image_pos.sum())} image tokens but {feats_NV.shape[0]} feature rows")
    proj_NH = model.model.multi_modal_projector(feats_NV).to(embeds.dtype)
    embeds = embeds.masked_scatter(image_pos[..., None], proj_NH)
    hidden = model.model.language_model(inputs_embeds=embeds, attention_mask=attn.long()).last_hidden_state
    # position t predicts token t+1
    target = labels[:, 1:]
    keep = target != IGNORE
    logits = model.lm_head(hidden[:, :-1][keep])
    loss = F.cross_entropy(logits.float(), target[keep])
    acc = (logits.argmax(-1) == target[keep]).float().mean().item()
    return loss, acc
