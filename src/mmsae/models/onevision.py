"""LLaVA-OneVision: LLaVA-NeXT's AnyRes plus `anyres_max_N` (the unpadded grid is bilinearly shrunk
when it holds more than ~N base grids) and a different multi-image path (each image of a
multi-image sample is padded to a square, one view, one trailing newline)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from .base import module_level_class, saved_processor
from .llava import (
    LlavaNextAdapter,
    anyres_canvas,
    best_resolution,
    clip_view,
    unpad_slice,
    with_row_ends,
)
from .table import IMAGE, ImageTokens


def image_only_processor(image_processor, tokenizer, num_image_tokens: int, vision_aspect_ratio: str,
                         strategy: str = "full"):
    """A OneVision processor without the video processor (which needs torchvision)."""
    return _processor_class()(image_processor=image_processor, tokenizer=tokenizer, num_image_tokens=num_image_tokens,
                              vision_aspect_ratio=vision_aspect_ratio, strategy=strategy)


def _build_processor_class():
    from transformers import LlavaOnevisionProcessor, ProcessorMixin

    class OneVisionImageProcessor(LlavaOnevisionProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, num_image_tokens=0,
                     vision_aspect_ratio="", strategy="full", **kwargs):
            self.num_image_tokens = num_image_tokens
            self.vision_feature_select_strategy = strategy
            self.image_token, self.video_token = "<image>", "<video>"
            self.image_token_id = tokenizer.convert_tokens_to_ids("<image>")
            self.video_token_id = tokenizer.convert_tokens_to_ids("<video>")
            self.vision_aspect_ratio = vision_aspect_ratio
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return OneVisionImageProcessor


_processor_class, __getattr__ = module_level_class(__name__, "OneVisionImageProcessor", _build_processor_class)


class OneVisionAdapter(LlavaNextAdapter):
    family = "llava_onevision"
    model_types = ("llava_onevision",)

    @staticmethod
    def load_processor(path: Path):
        import json

        from transformers import (
            AutoConfig,
            AutoTokenizer,
            LlavaOnevisionImageProcessorPil,
        )

        processor = saved_processor(path)
        if processor is not None:
            return processor
        cfg = AutoConfig.from_pretrained(path)
        grid = cfg.vision_config.image_size // cfg.vision_config.patch_size
        extra = {}
        if (path / "processor_config.json").exists():
            extra = json.loads((path / "processor_config.json").read_text())
        return image_only_processor(LlavaOnevisionImageProcessorPil.from_pretrained(path),
                                    AutoTokenizer.from_pretrained(path), extra.get("num_image_tokens", grid * grid),
                                    cfg.vision_aspect_ratio, cfg.vision_feature_select_strategy)

    def process(self, images: list[list[Image.Image]], texts: list[str]) -> dict:
        # Nested per sample: the processor patches only images that are alone in their sample.
        kwargs = {"images": images} if any(images) else {}
        return self.processor(text=texts, padding=True, return_tensors="pt", **kwargs)

    def image_tokens(self, image: Image.Image, index: int, inputs: dict) -> ImageTokens:
        ip = self.processor.image_processor
        cfg = self.model.config
        crop = int(ip.crop_size["height"]) if ip.do_center_crop else int(ip.size.get("height") or
                                                                          ip.size.get("shortest_edge"))
        grid = int(cfg.vision_config.image_size) // int(cfg.vision_config.patch_size)
        h, w = (int(v) for v in inputs["image_sizes"][index])
        counts = inputs.get("batch_num_images")
        alone = True
        if counts is not None:
            owner = int(np.searchsorted(np.cumsum(counts.tolist()), index, side="right"))
            alone = int(counts[owner]) == 1
        if not alone:
            affine, ch, cw = clip_view(w, h, ip, pad_square=True)
            p = ch / grid
            return ImageTokens.cat([ImageTokens.grid(affine, grid, grid, p, p), ImageTokens.special(1, tile=-1)])
        base = self.base_tokens(w, h, crop, grid)
        best = best_resolution(h, w, cfg.image_grid_pinpoints)
        canvas, bh, bw = anyres_canvas(h, w, best)
        npw = bw // crop
        rows, cols = unpad_slice(h, w, (bh // crop) * grid, npw * grid)
        ch, cw = rows.stop - rows.start, cols.stop - cols.start
        # the same parsing as transformers (a character strip), so both agree on odd values
        max_n = int(cfg.vision_aspect_ratio.strip("anyres_max_"))  # noqa: B005
        ratio = math.sqrt(ch * cw / (max_n * grid**2))
        if ratio <= 1.1:
            return ImageTokens.cat([base, self.tiles_tokens(canvas, crop, grid, npw, rows, cols)])
        return ImageTokens.cat([base, self._shrunk(canvas, crop, grid, npw, rows, cols, ratio)])

    def _shrunk(self, canvas, crop, grid, npw, rows, cols, ratio) -> ImageTokens:
        """The bilinearly shrunk grid: each token's box is its footprint on the unpadded grid; tile
        and patch are those of the footprint's centre."""
        ch, cw = rows.stop - rows.start, cols.stop - cols.start
        nh, nw = int(ch // ratio), int(cw // ratio)
        fh, fw = ch / nh, cw / nw
        p = crop / grid
        i_N, j_N = np.divmod(np.arange(nh * nw), nw)  # shrunk row, column of each token
        r0_N, r1_N = rows.start + i_N * fh, rows.start + (i_N + 1) * fh
        c0_N, c1_N = cols.start + j_N * fw, cols.start + (j_N + 1) * fw
        box = canvas.boxes(c0_N * p, r0_N * p, c1_N * p, r1_N * p)
        R_N, C_N = ((r0_N + r1_N) / 2).astype(int), ((c0_N + c1_N) / 2).astype(int)
        feats = ImageTokens(np.full(nh * nw, IMAGE, np.int8), (1 + (R_N // grid) * npw + C_N // grid).astype(np.int32),
                            (R_N % grid).astype(np.int32), (C_N % grid).astype(np.int32), box)
        return with_row_ends(feats, nw, np.arange(nh))


ADAPTERS = [OneVisionAdapter]
