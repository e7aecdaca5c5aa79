"""Idefics3 / SmolVLM: resize (longest edge), round up to multiples of the encoder size, split into
M x M tiles plus a global M x M view; pixel shuffle merges s x s patches per token.

Sequence per image: for every tile row, `<fake><row_i_col_j><image>*n` per tile, a newline; then
`<fake><global-img><image>*n<fake>`. Tile numbering here: 0 = global view, 1.. = tiles row-major
(the global view comes last in the sequence, as in the model)."""

from __future__ import annotations

import math
import re
from pathlib import Path

from PIL import Image

from .base import Adapter, saved_processor
from .table import Affine, ImageTokens

MAX_IMAGE_SIZE = 4096  # transformers' Idefics3 cap on either side after the first resize


def _rescale_to_max_len(h: int, w: int, max_len: int) -> tuple[int, int]:
    aspect = w / h
    if w >= h:
        w = max_len
        h = int(w / aspect)
        h += h % 2
    else:
        h = max_len
        w = int(h * aspect)
        w += w % 2
    return max(h, 1), max(w, 1)


def _below_upper_bound(h: int, w: int, max_len: int) -> tuple[int, int]:
    aspect = w / h
    if w >= h and w > max_len:
        w = max_len
        h = int(w / aspect)
    elif h > w and h > max_len:
        h = max_len
        w = int(h * aspect)
    return max(h, 1), max(w, 1)


def _for_encoder(h: int, w: int, m: int) -> tuple[int, int]:
    aspect = w / h
    if w >= h:
        w = math.ceil(w / m) * m
        h = math.ceil(int(w / aspect) / m) * m
    else:
        h = math.ceil(h / m) * m
        w = math.ceil(int(h * aspect) / m) * m
    return h, w


def idefics_frames(w: int, h: int, ip) -> tuple[int, int, int, int]:
    """(resized_w, resized_h, n_rows, n_cols) of the processor; n_rows = n_cols = 0: no split."""
    m = int(ip.max_image_size["longest_edge"])
    if ip.do_resize and ip.size.get("longest_edge"):
        h, w = _rescale_to_max_len(h, w, int(ip.size["longest_edge"]))
        h, w = _below_upper_bound(h, w, MAX_IMAGE_SIZE)
    if not ip.do_image_splitting:
        return m, m, 0, 0
    h, w = _for_encoder(h, w, m)
    if h > m or w > m:
        return w, h, (h - m) // m + 1, (w - m) // m + 1
    return w, h, 0, 0


class Idefics3Adapter(Adapter):
    family = "idefics3"
    model_types = ("idefics3", "smolvlm")

    def decoder_layers(self):
        return self.model.model.text_model.layers

    @staticmethod
    def load_processor(path: Path):
        from transformers import AutoConfig, AutoTokenizer, Idefics3Processor

        processor = saved_processor(path)
        if processor is not None:
            return processor
        # SmolVLMProcessor wants num2words and a video processor (torchvision); for images its
        # prompt layout is Idefics3's, so build an Idefics3Processor from the saved parts.
        from transformers import SmolVLMImageProcessorPil

        cfg = AutoConfig.from_pretrained(path)
        seq = (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2 // cfg.scale_factor**2
        return Idefics3Processor(image_processor=SmolVLMImageProcessorPil.from_pretrained(path),
                                 tokenizer=AutoTokenizer.from_pretrained(path), image_seq_len=seq)

    def extra_special_ids(self) -> set[int]:
        tags = {tok for tok in self.tokenizer.get_added_vocab() if re.fullmatch(r"<row_\d+_col_\d+>", tok)}
        tags |= {"<fake_token_around_image>", "<global-img>", "<end_of_utterance>"}
        ids = {self.tokenizer.convert_tokens_to_ids(t) for t in tags}
        return {i for i in ids if i is not None and i != self.tokenizer.unk_token_id}

    def image_tokens(self, image: Image.Image, index: int, inputs: dict) -> ImageTokens:
        ip = self.processor.image_processor
        cfg = self.model.config
        m = int(ip.max_image_size["longest_edge"])
        p, s = int(cfg.vision_config.patch_size), int(cfg.scale_factor)
        per = m // (p * s)  # tokens per side of one M x M frame after the pixel shuffle
        rw, rh, n_rows, n_cols = idefics_frames(image.width, image.height, ip)
        step = p * s
        parts = []
        resized = Affine.resize(image.width, image.height, rw, rh)
        for r in range(n_rows):
            for c in range(n_cols):
                parts.append(ImageTokens.grid(resized, per, per, step, step, tile=1 + r * n_cols + c,
                                              u_off=c * m, v_off=r * m))
        parts.append(ImageTokens.grid(Affine.resize(image.width, image.height, m, m), per, per, step, step, tile=0))
        return ImageTokens.cat(parts)


ADAPTERS = [Idefics3Adapter]
