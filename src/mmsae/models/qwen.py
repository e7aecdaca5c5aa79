"""Qwen2-VL and Qwen2.5-VL: dynamic resolution (smart_resize to multiples of patch*merge), 2x2
patch merge, <|vision_start|> <|image_pad|>*N <|vision_end|>."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from .base import IMAGE_PLACEHOLDER, Adapter, module_level_class, saved_processor
from .table import Affine, ImageTokens


def image_only_processor(image_processor, tokenizer):
    """A Qwen-VL processor without the video processor (which needs torchvision)."""
    return _processor_class()(image_processor=image_processor, tokenizer=tokenizer)


def _build_processor_class():
    from transformers import ProcessorMixin
    from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor

    class QwenImageProcessor(Qwen2VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
            self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return QwenImageProcessor


_processor_class, __getattr__ = module_level_class(__name__, "QwenImageProcessor", _build_processor_class)


class QwenVLAdapter(Adapter):
    family = "qwen2_vl"
    model_types = ("qwen2_vl", "qwen2_5_vl")

    @staticmethod
    def load_processor(path: Path):
        from transformers import AutoTokenizer
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            Qwen2VLImageProcessorPil,
        )

        processor = saved_processor(path)
        if processor is not None:
            return processor
        # A saved Qwen processor asks for its video processor, which needs torchvision, or names
        # a class AutoProcessor cannot find: build it from its parts.
        return image_only_processor(Qwen2VLImageProcessorPil.from_pretrained(path), AutoTokenizer.from_pretrained(path))

    def expand_text(self, text: str, images: list[Image.Image]) -> str:
        return text.replace(IMAGE_PLACEHOLDER, f"<|vision_start|>{self.image_token}<|vision_end|>")

    def extra_special_ids(self) -> set[int]:
        cfg = self.model.config
        return {int(cfg.vision_start_token_id), int(cfg.vision_end_token_id)}

    def image_tokens(self, image: Image.Image, index: int, inputs: dict) -> ImageTokens:
        vc = self.model.config.vision_config
        p, m = int(vc.patch_size), int(vc.spatial_merge_size)
        t, gh, gw = (int(v) for v in inputs["image_grid_thw"][index])
        affine = Affine.resize(image.width, image.height, gw * p, gh * p)
        # After the merge each token is an m x m block of patches, in row-major order of blocks.
        toks = ImageTokens.grid(affine, gh // m, gw // m, p * m, p * m)
        return ImageTokens.cat([toks] * t)
ADAPTERS = [QwenVLAdapter]
