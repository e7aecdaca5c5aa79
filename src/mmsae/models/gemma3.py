"""Gemma 3: the image is squashed to the SigLIP size (no aspect kept), the patch grid is average-
pooled to mm_tokens_per_image tokens; `<start_of_image> <image_soft_token>*256 <end_of_image>`."""

from __future__ import annotations

from PIL import Image

from .base import Adapter, AdapterError
from .table import Affine, ImageTokens


class Gemma3Adapter(Adapter):
    family = "gemma3"
    model_types = ("gemma3",)

    @property
    def image_token(self) -> str:
        return self.processor.boi_token  # what the processor expands into the full image sequence

    @property
    def image_token_id(self) -> int:
        return int(self.model.config.image_token_id)  # the soft tokens the features replace

    def process(self, images: list[list[Image.Image]], texts: list[str]) -> dict:
        # Gemma3Processor counts images per sample, so it needs them nested.
        kwargs = {"images": images} if any(images) else {}
        return self.processor(text=texts, padding=True, return_tensors="pt", **kwargs)

    def extra_special_ids(self) -> set[int]:
        cfg = self.model.config
        return {int(cfg.boi_token_index), int(cfg.eoi_token_index)}

    def image_tokens(self, image: Image.Image, index: int, inputs: dict) -> ImageTokens:
        ip = self.processor.image_processor
        if getattr(ip, "do_pan_and_scan", False):
            raise AdapterError("gemma3: pan-and-scan crops are not mapped yet; set do_pan_and_scan=False")
        cfg = self.model.config
        side = int(cfg.vision_config.image_size)
        per = round(cfg.mm_tokens_per_image ** 0.5)
        h, w = (int(ip.size["height"]), int(ip.size["width"])) if ip.do_resize else (image.height, image.width)
        if (h, w) != (side, side):
            raise AdapterError(f"gemma3: processor size {h}x{w} != vision tower size {side}")
        step = side / per  # one pooled token averages a (side/per)^2 pixel block
        return ImageTokens.grid(Affine.resize(image.width, image.height, side, side), per, per, step, step)


ADAPTERS = [Gemma3Adapter]
