"""CLIP score (x100) between an explanation and a feature's top images, with its random baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .stats import Baseline


class ClipScorer:
    """Any Hugging Face CLIP checkpoint (the zoo's by default in `mmsae score`)."""

    def __init__(self, path: str | Path, device: str | None = None, batch: int = 64):
        from transformers import CLIPModel, CLIPProcessor

        if not (Path(path) / "config.json").is_file():
            raise FileNotFoundError(f"no CLIP model at {path} (config.json missing)")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = CLIPModel.from_pretrained(path).to(self.device).eval()
        self.processor = CLIPProcessor.from_pretrained(path)
        self.name = f"clip:{Path(path).name}"
        self.batch = batch
        self._texts: dict[str, torch.Tensor] = {}  # explanation -> unit embedding, reused by the baselines

    @torch.no_grad()
    def image_embeddings(self, images: list[Image.Image]) -> torch.Tensor:
        out = []
        for i in range(0, len(images), self.batch):
            px = self.processor(images=[im.convert("RGB") for im in images[i : i + self.batch]],
                                return_tensors="pt")["pixel_values"].to(self.device)
            out.append(self._features(self.model.get_image_features(pixel_values=px)))
        return torch.nn.functional.normalize(torch.cat(out), dim=-1)

    @torch.no_grad()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        new = [t for t in dict.fromkeys(texts) if t not in self._texts]
        for i in range(0, len(new), self.batch):
            chunk = new[i : i + self.batch]
            enc = self.processor.tokenizer(chunk, padding=True, truncation=True, return_tensors="pt").to(self.device)
            emb = torch.nn.functional.normalize(self._features(self.model.get_text_features(**enc)), dim=-1)
            self._texts.update(zip(chunk, emb))
        return torch.stack([self._texts[t] for t in texts]) if texts else torch.zeros(0)

    @staticmethod
    def _features(out) -> torch.Tensor:
        # transformers returns a tensor or an output object whose pooler_output holds the projection
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    @staticmethod
    def _clip_score(img_ND: torch.Tensor, txt_TD: torch.Tensor) -> torch.Tensor:
        """Per text: 100 x the mean over images of the cosine clipped at 0 (the CLIP score)."""
        return 100 * (txt_TD @ img_ND.T).clamp(min=0).mean(dim=1)

    def score(self, text: str, images: list[Image.Image], img_ND: torch.Tensor | None = None) -> float:
        """CLIP score of one explanation with the images (pass `img_ND` to reuse their embeddings)."""
        img_ND = self.image_embeddings(images) if img_ND is None else img_ND
        return float(self._clip_score(img_ND, self.text_embeddings([text]))[0])

    def random_score(self, images: list[Image.Image], pool: list[str], rng: np.random.Generator, trials: int = 100,
                     img_ND: torch.Tensor | None = None) -> Baseline:
        """Baseline: `trials` explanations drawn uniformly (with replacement) from `pool` (the other
        features' explanations), each scored against the same images."""
        if not pool:
            raise ValueError("the random CLIP baseline needs a pool of other explanations; it is empty")
        if trials < 1:
            raise ValueError(f"trials must be >= 1, got {trials}")
        img_ND = self.image_embeddings(images) if img_ND is None else img_ND
        drawn = [pool[i] for i in rng.integers(len(pool), size=trials)]
        return Baseline.of(self._clip_score(img_ND, self.text_embeddings(drawn)).tolist())
