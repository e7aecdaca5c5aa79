"""CLIP score (x100) between an explanation and a feature's top images, with a random baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


class ClipScorer:
    def __init__(self, path: str | Path, device: str | None = None):
        from transformers import CLIPModel, CLIPProcessor

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = CLIPModel.from_pretrained(path).to(self.device).eval()
        self.processor = CLIPProcessor.from_pretrained(path)

    @torch.no_grad()
    def image_embeddings(self, images: list[Image.Image]) -> torch.Tensor:
        px = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
        return torch.nn.functional.normalize(self._features(self.model.get_image_features(pixel_values=px)), dim=-1)

    @torch.no_grad()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        enc = self.processor.tokenizer(texts, padding=True, truncation=True, return_tensors="pt").to(self.device)
        return torch.nn.functional.normalize(self._features(self.model.get_text_features(**enc)), dim=-1)

    @staticmethod
    def _features(out) -> torch.Tensor:
        # transformers returns a tensor or an output object whose pooler_output holds the projection
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def score(self, text: str, images: list[Image.Image]) -> float:
        """100 x mean cosine between the text and each image (the CLIP score, clipped at 0)."""
        sims = (self.image_embeddings(images) @ self.text_embeddings([text]).T).squeeze(-1)
        return float(100 * sims.clamp(min=0).mean())

    def random_score(self, images: list[Image.Image], pool: list[str], rng: np.random.Generator, trials: int = 20) -> float:
        """Baseline: random explanations drawn from a pool, scored against the same images."""
        img = self.image_embeddings(images)
        txt = self.text_embeddings([pool[i] for i in rng.integers(len(pool), size=trials)])
        return float(100 * (img @ txt.T).clamp(min=0).mean())
