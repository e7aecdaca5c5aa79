"""Versioned prompt templates and OpenAI-style chat messages carrying images."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..llm.messages import image_part

PROMPTS = Path(__file__).parent / "prompts"


@dataclass(frozen=True)
class PromptTemplate:
    version: str
    system: str | None
    user: str

    @classmethod
    def load(cls, name_or_path: str) -> "PromptTemplate":
        """A shipped template by version ('paper-v1', 'zoo-v1') or a JSON file of your own."""
        path = Path(name_or_path)
        if not path.exists():
            path = PROMPTS / f"{name_or_path}.json"
        if not path.exists():
            known = ", ".join(sorted(p.stem for p in PROMPTS.glob("*.json")))
            raise ValueError(f"unknown prompt template {name_or_path!r}; shipped: {known}")
        data = json.loads(path.read_text())
        return cls(version=data["version"], system=data.get("system"), user=data["user"])

    def messages(self, images: list[Image.Image]) -> list[dict]:
        """OpenAI chat-completions messages: the images first, then the instruction."""
        content = [image_part(im) for im in images]
        content.append({"type": "text", "text": self.user})
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        return msgs + [{"role": "user", "content": content}]
