"""Run a local Hugging Face LMM on OpenAI-style chat messages (the engine behind LocalChat and
the chat server of `mmsae serve-explainer`)."""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from .messages import from_data_url


def to_hf_messages(messages: list[dict]) -> tuple[list[dict], list]:
    """OpenAI messages -> HF chat-template messages plus the decoded images, in order."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    out, images = [], []
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        if role not in ("system", "user", "assistant"):
            raise ValueError(f"message {i}: unsupported role {role!r}")
        if isinstance(content, str):
            out.append({"role": role, "content": [{"type": "text", "text": content}]})
            continue
        if not isinstance(content, list):
            raise ValueError(f"message {i}: content must be a string or a list of parts")
        parts = []
        for part in content:
            if part.get("type") == "text":
                parts.append({"type": "text", "text": part["text"]})
            elif part.get("type") == "image_url":
                url = part["image_url"]["url"] if isinstance(part["image_url"], dict) else part["image_url"]
                images.append(from_data_url(url))
                parts.append({"type": "image"})
            else:
                raise ValueError(f"message {i}: unsupported content part {part.get('type')!r}")
        out.append({"role": role, "content": parts})
    return out, images


class HFChatModel:
    """One HF image-text-to-text model answering chats greedily; generate calls are serialised."""

    def __init__(self, path: str | Path, max_new_tokens: int = 32, device: str | None = None):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.path = str(path)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModelForImageTextToText.from_pretrained(self.path).to(self.device).eval()
        self.processor = AutoProcessor.from_pretrained(self.path)
        self.max_new_tokens = max_new_tokens
        self._lock = threading.Lock()

    @torch.no_grad()
    def complete(self, messages: list[dict], max_tokens: int | None = None) -> tuple[str, int, int]:
        """(answer text, prompt tokens, completion tokens)."""
        hf_messages, images = to_hf_messages(messages)
        prompt = self.processor.apply_chat_template(hf_messages, add_generation_prompt=True, tokenize=False)
        enc = self.processor(images=images or None, text=[prompt], return_tensors="pt").to(self.device)
        tok = self.processor.tokenizer
        with self._lock:
            out = self.model.generate(**enc, max_new_tokens=max_tokens or self.max_new_tokens, do_sample=False,
                                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        new = out[0, enc["input_ids"].shape[1] :]
        text = tok.decode(new, skip_special_tokens=True).replace(" - ", "-").strip()
        return text, int(enc["input_ids"].shape[1]), int(len(new))
