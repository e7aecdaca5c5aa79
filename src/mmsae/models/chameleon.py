"""Chameleon: early fusion. The image is resized + centre-cropped, VQ-encoded into a grid of codes,
and the codes replace the `<image>` placeholders as ordinary vocabulary tokens. The token table
records each image token's real VQ code (as a BPE id), not the placeholder."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from .base import Adapter, Encoded
from .llava import clip_view
from .table import IMAGE, ImageTokens


class ChameleonAdapter(Adapter):
    family = "chameleon"
    model_types = ("chameleon",)

    def decoder_layers(self):
        return self.model.model.layers

    def text_config(self):
        return self.model.config

    def extra_special_ids(self) -> set[int]:
        p = self.processor
        return {int(p.image_start_token_id), int(p.image_end_token_id)}

    def process(self, images: list[list[Image.Image]], texts: list[str]) -> dict:
        flat = [im for per in images for im in per]
        kwargs = {"images": flat} if flat else {}
        # Plain continuation, no chat separator appended after the text.
        return self.processor(text=texts, padding=True, return_tensors="pt", return_for_text_completion=True,
                              **kwargs)

    def image_tokens(self, image: Image.Image, index: int, inputs: dict) -> ImageTokens:
        ip = self.processor.image_processor
        affine, ch, cw = clip_view(image.width, image.height, ip)
        per = round(math.sqrt(self.processor.image_seq_length))
        return ImageTokens.grid(affine, per, per, ch / per, cw / per)

    def finish_encode(self, enc: Encoded) -> Encoded:
        """The VQ codes come from the model's own tokenizer tower, so this runs where the model is."""
        if "pixel_values" not in enc.inputs:
            return enc
        with torch.inference_mode():
            pv = enc.inputs["pixel_values"].to(self.device, self.dtype)
            codes_NK = self.model.model.get_image_tokens(pv).cpu().numpy()  # BPE ids of the VQ codes
        k = 0
        for table in enc.tables:
            for i in range(int(table.image_index.max()) + 1):
                sel = np.flatnonzero((table.image_index == i) & (table.modality == IMAGE))
                table.token_id[sel] = codes_NK[k]
                k += 1
        return enc


ADAPTERS = [ChameleonAdapter]
