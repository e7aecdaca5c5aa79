"""Images inside OpenAI-style chat messages: base64 data URLs, and nothing fetched from the network."""

from __future__ import annotations

import base64
import io

from PIL import Image


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


def image_part(image: Image.Image) -> dict:
    """One `image_url` content part carrying the image inline."""
    return {"type": "image_url", "image_url": {"url": to_data_url(image)}}
