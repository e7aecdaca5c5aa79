"""The adapter interface: encode (images, text) into model inputs plus a token table, capture or
replace the residual stream after one decoder block, stop the forward pass early.

Layer naming: `layer=L` is the output of decoder block L, 0-indexed. It equals
`output_hidden_states=True`'s `hidden_states[L + 1]` (index 0 is the embeddings) and is what
papers call "layer L+1" (Multimodal-SAE's "layer 25" of LLaVA-NeXT-8B is `layer=24` here). For the
last block HF applies the final norm to `hidden_states[-1]`; we capture the block's raw output.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from jaxtyping import Float
from PIL import Image

from mmsae.util import check_shape

from .table import SPECIAL, TEXT, ImageTokens, TokenTable

IMAGE_PLACEHOLDER = "<image>"  # family-neutral placeholder in prompts; adapters swap in their own


class AdapterError(ValueError):
    """A model, layer or input the adapter cannot handle; raised before any work is done."""


class _EarlyExit(Exception):
    """Raised from the hook on block L to stop the forward pass; carries the captured activations."""

    def __init__(self, acts_BSD: torch.Tensor):
        super().__init__()
        self.acts_BSD = acts_BSD


@dataclass
class Prompt:
    """What goes to the encoder for one sequence: images (may be empty) and text with `<image>` placeholders.

    Without placeholders the images go first, one placeholder each, as LLaVA-style data does."""

    images: list[Image.Image] = field(default_factory=list)
    text: str = ""


@dataclass
class Encoded:
    """Model inputs (tensors for `model(**inputs)`) and one token table per sequence of the batch."""

    inputs: dict[str, torch.Tensor]
    tables: list[TokenTable]


def module_level_class(module: str, name: str, build):
    """`build()` (a class defined inside a function, so transformers is imported lazily) registered as
    `module.name` on first use, so that pickle finds it: data-loader workers that are not forked receive
    processors pickled. Returns (get, module_getattr): `get()` gives the class, `module_getattr` is the
    module's `__getattr__`, which builds it when a fresh process unpickles one."""
    import sys

    def get():
        namespace = vars(sys.modules[module])
        if name not in namespace:
            cls = build()
            cls.__name__ = cls.__qualname__ = name
            cls.__module__ = module
            namespace[name] = cls
        return namespace[name]

    def module_getattr(attr: str):
        if attr == name:
            return get()
        raise AttributeError(f"module {module!r} has no attribute {attr!r}")

    return get, module_getattr


def saved_processor(path):
    """The checkpoint's own processor when AutoProcessor can build it with an image processor, else None
    (Qwen, OneVision and SmolVLM processors want torchvision or extra packages; adapters then build one
    from the saved parts)."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(path)
    except (ImportError, ValueError, OSError, TypeError, AttributeError):
        return None
    return processor if hasattr(processor, "image_processor") else None


def _hidden(out):
    return out[0] if isinstance(out, tuple) else out


class _ConfigOnly:
    """Stands in for the model in `Adapter.model_free()`: the config, nothing to run."""

    def __init__(self, config):
        self.config = config

    def eval(self):
        return self


class Adapter:
    """Base class; one subclass per model family. Family quirks live only in the subclasses."""

    family: str = ""
    model_types: tuple[str, ...] = ()  # HF `config.model_type` values this adapter handles

    def __init__(self, model: torch.nn.Module, processor, source: str | None = None):
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.source = source

    # ---- family-specific pieces -------------------------------------------------------------
    def decoder_layers(self) -> torch.nn.ModuleList:
        return self.model.model.language_model.layers

    def text_config(self):
        return self.model.config.get_text_config()

    @property
    def image_token(self) -> str:
        return self.processor.image_token

    @property
    def image_token_id(self) -> int:
        return int(self.tokenizer.convert_tokens_to_ids(self.image_token))

    def image_tokens(self, image: Image.Image, index: int, inputs: dict) -> ImageTokens:
        """Geometry of the placeholder tokens of one image (the `index`-th of the batch), in the
        order the model scatters its features into the sequence."""
        raise NotImplementedError

    def expand_text(self, text: str, images: list[Image.Image]) -> str:
        """Swap the neutral placeholder for the family's image token (the processor expands it)."""
        return text.replace(IMAGE_PLACEHOLDER, self.image_token)

    def process(self, images: list[list[Image.Image]], texts: list[str]) -> dict:
        """Run the HF processor; images are given per sample (most processors want them flat)."""
        flat = [im for per in images for im in per]
        kwargs = {"images": flat} if flat else {}
        return self.processor(text=texts, padding=True, return_tensors="pt", **kwargs)

    def extra_special_ids(self) -> set[int]:
        """Ids that are not in `all_special_ids` but mark structure (image start/end, row tags)."""
        return set()

    # ---- generic surface --------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return len(self.decoder_layers())

    @property
    def d_model(self) -> int:
        return int(self.text_config().hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def check_layer(self, layer: int) -> None:
        if not isinstance(layer, int) or not 0 <= layer < self.n_layers:
            raise AdapterError(
                f"layer {layer!r} is out of range: {self.family} model has {self.n_layers} decoder "
                f"blocks, valid layers are 0..{self.n_layers - 1} (0-indexed block outputs)"
            )

    def encode(self, prompts: Sequence[Prompt], padding_side: str = "right") -> Encoded:
        """Batch of prompts -> padded model inputs and a token table per sequence.

        Right padding (the default) keeps every real token's activations equal to those of the
        unpadded sequence; use "left" for batched generation. Table positions count from the
        sequence's first real token either way; image_index counts the sample's own images.
        It is `finish_encode(prepare(prompts))`: the model-free part, then the part that needs the model."""
        return self.finish_encode(self.prepare(prompts, padding_side))

    def prepare(self, prompts: Sequence[Prompt], padding_side: str = "right") -> Encoded:
        """The CPU part of `encode` that needs the processor and the config but not the weights, so
        that data-loader workers can run it (on `model_free()`) while the model runs the previous batch."""
        images: list[Image.Image] = []
        nested: list[list[Image.Image]] = []
        texts: list[str] = []
        owners: list[int] = []
        for b, s in enumerate(prompts):
            text = s.text
            n_marks = text.count(IMAGE_PLACEHOLDER)
            if n_marks == 0 and s.images:
                text = IMAGE_PLACEHOLDER * len(s.images) + (" " if text else "") + text
            elif n_marks != len(s.images):
                raise AdapterError(
                    f"sample {b}: {n_marks} '{IMAGE_PLACEHOLDER}' placeholders for {len(s.images)} images"
                )
            imgs = [im.convert("RGB") if im.mode != "RGB" else im for im in s.images]
            images += imgs
            nested.append(imgs)
            owners += [b] * len(imgs)
            texts.append(self.expand_text(text, imgs))
        side = getattr(self.tokenizer, "padding_side", "right")
        self.tokenizer.padding_side = padding_side
        try:
            inputs = dict(self.process(nested, texts))
        finally:
            self.tokenizer.padding_side = side
        per_image = [self.image_tokens(im, i, inputs) for i, im in enumerate(images)]
        tables = [
            self._table(b, inputs, [per_image[i] for i, o in enumerate(owners) if o == b])
            for b in range(len(prompts))
        ]
        return Encoded(inputs=inputs, tables=tables)

    def finish_encode(self, enc: Encoded) -> Encoded:
        """The part of `encode` that needs the model (Chameleon's VQ codes); nothing for most families."""
        return enc

    def model_free(self) -> Adapter:
        """A copy that can `prepare` but holds no weights: cheap to pickle into a data-loader worker,
        and any use of the model there fails loudly instead of running a second copy."""
        import copy

        light = copy.copy(self)
        light.model = _ConfigOnly(self.model.config)
        return light

    def _special_ids(self) -> np.ndarray:
        """Ids of structural tokens, minus the image placeholder; computed once (idefics scans its vocabulary)."""
        cached = self.__dict__.get("_special_ids_cache")
        if cached is None:
            special = set(self.tokenizer.all_special_ids) | self.extra_special_ids()
            special.discard(self.image_token_id)
            cached = self._special_ids_cache = np.array(sorted(special), np.int64)
        return cached

    def _table(self, b: int, inputs: dict, images: list[ImageTokens]) -> TokenTable:
        ids_S = inputs["input_ids"][b].cpu().numpy()
        mask_S = inputs.get("attention_mask")
        mask_S = np.ones_like(ids_S, bool) if mask_S is None else mask_S[b].cpu().numpy().astype(bool)
        n = len(ids_S)
        table = TokenTable.empty(n)
        first = int(np.argmax(mask_S)) if mask_S.any() else 0
        table.position[:] = np.arange(n) - first
        table.token_id[:] = ids_S
        table.modality[:] = TEXT
        table.modality[np.isin(ids_S, self._special_ids())] = SPECIAL
        table.modality[~mask_S] = SPECIAL  # padding, whatever its id
        slots_N = np.flatnonzero((ids_S == self.image_token_id) & mask_S)
        want = sum(len(t.modality) for t in images)
        if want != len(slots_N):
            raise AdapterError(
                f"{self.family}: sequence {b} has {len(slots_N)} image placeholder tokens but the "
                f"geometry gives {want}; the processor and adapter disagree"
            )
        if images:  # the images fill the placeholder slots in order: one scatter for all of them
            toks = ImageTokens.cat(images)
            table.modality[slots_N] = toks.modality
            table.image_index[slots_N] = np.repeat(np.arange(len(images), dtype=np.int32),
                                                   [len(t.modality) for t in images])
            table.tile[slots_N] = toks.tile
            table.patch_row[slots_N] = toks.patch_row
            table.patch_col[slots_N] = toks.patch_col
            table.box[slots_N] = toks.box
        return table

    def _to_device(self, inputs: dict) -> dict:
        out = {}
        for k, v in inputs.items():
            if isinstance(v, torch.Tensor):
                # pinned (a data loader's pin_memory): copy without waiting for the queued forward
                v = v.to(self.device, non_blocking=v.device.type == "cpu" and v.is_pinned())
                if v.is_floating_point():
                    v = v.to(self.dtype)
            out[k] = v
        return out

    def capture(self, inputs: dict, layer: int, early_exit: bool = True) -> Float[torch.Tensor, "B S D"]:
        """Residual stream after block `layer` for every position: acts_BSD.

        With early_exit the forward pass stops right after that block (blocks above it, the final
        norm and the LM head never run), so capture costs about (layer+1)/n_layers of a forward."""
        self.check_layer(layer)
        box: dict[str, torch.Tensor] = {}
        caller = threading.get_ident()

        def hook(_module, _args, out):
            if threading.get_ident() != caller:  # another thread's concurrent capture (`forwards`)
                return None
            acts_BSD = _hidden(out)
            if early_exit:
                raise _EarlyExit(acts_BSD)
            box["acts"] = acts_BSD

        ids_BS = inputs.get("input_ids") if hasattr(inputs, "get") else None
        if ids_BS is not None:
            check_shape("inputs['input_ids']", ids_BS, "B S")
        handle = self.decoder_layers()[layer].register_forward_hook(hook)
        try:
            with torch.inference_mode():
                self.model(**self._to_device(inputs), use_cache=False)
        except _EarlyExit as stop:
            acts_BSD = stop.acts_BSD
        else:
            acts_BSD = box["acts"]
        finally:
            handle.remove()
        # a family whose block output is not [B, S, d_model] (packed sequences, a tuple unwrapped wrongly) would
        # silently misalign every token-table row downstream: fail here, naming both shapes
        B, S = (ids_BS.shape if ids_BS is not None else (None, None))
        check_shape("acts_BSD", acts_BSD, "B S D", B=B, S=S, D=self.d_model)
        return acts_BSD

    @contextlib.contextmanager
    def replace(self, layer: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
        """Within the block, the output of block `layer` is replaced by fn(acts_BSD) on every
        forward pass, including each step of `generate` (where S is the new positions only).
        `intervene` is the general form (its function also gets the positions of the call)."""
        with self.intervene(layer, lambda acts_BSD, _site: fn(acts_BSD)):
            yield

    def intervene(self, layer: int, fn):
        """Context manager: the output of block `layer` becomes fn(hidden_BSD, site) in every forward
        call (plain, grad-enabled, each step of cached `generate`); see `mmsae.models.intervene`."""
        from .intervene import intervene

        return intervene(self, layer, fn)

    def forward_logits(self, inputs: dict, grad: bool = False, param_grads: bool = False) -> torch.Tensor:
        """logits_BSV of one full forward (no cache). grad=False runs under inference_mode; grad=True
        records the graph so tensors an intervention makes require grad can be differentiated. The
        parameters are not differentiated (their requires_grad is off for the call) unless param_grads."""
        inputs = self._to_device(inputs)
        if not grad:
            with torch.inference_mode():
                return self.model(**inputs, use_cache=False).logits
        params = [p for p in self.model.parameters() if p.requires_grad] if not param_grads else []
        for p in params:
            p.requires_grad_(False)
        try:
            with torch.enable_grad():
                return self.model(**inputs, use_cache=False).logits
        finally:
            for p in params:
                p.requires_grad_(True)

    def generate(self, inputs: dict, **kwargs) -> torch.Tensor:
        with torch.inference_mode():
            return self.model.generate(**self._to_device(inputs), **kwargs)
