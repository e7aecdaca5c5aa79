"""Versioned prompt templates and OpenAI-style chat messages carrying images."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

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
        content = [{"type": "image_url", "image_url": {"url": to_data_url(im)}} for im in images]
        content.append({"type": "text", "text": self.user})
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        return msgs + [{"role": "user", "content": content}]


def to_data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def from_data_url(url: str) -> Image.Image:
    """Decode a base64 data URL; remote URLs are refused (the server must never fetch from the network)."""
    if not url.startswith("data:image/"):
        raise ValueError("only base64 'data:image/...' URLs are accepted")
    _, b64 = url.split(",", 1)
    return Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")
