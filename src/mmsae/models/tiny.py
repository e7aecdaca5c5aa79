"""Tiny random models of every supported family, built offline from configs.

Used by the tests, the benchmark and anyone who wants to exercise the pipeline without
downloading weights. Weights are random (seeded), tokenizers are word-level and trained
in-process, processors use the PIL image processors (no torchvision needed).
"""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ["a", "an", "the", "is", "are", "of", "in", "on", "and", "or", "what", "colour", "color", "shape", "image", "picture", "photo", "describe", "red", "green", "blue", "yellow", "purple", "orange", "white", "black", "circle", "square", "star", "triangle", "left", "right", "top", "bottom", "middle", "small", "large", "yes", "no", "there", "this", "that", "object", "objects", "background"]


def word_tokenizer(
    specials: list[str], bos: str = "<s>", eos: str = "</s>", pad: str = "<pad>", extra: dict | None = None
):
    """A word-level fast tokenizer with the given special tokens (image placeholders etc.)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    base = [pad, bos, eos, "<unk>"]
    vocab = {tok: i for i, tok in enumerate(base + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad, unk_token="<unk>",
        **(extra or {}),
    )
    fast.add_special_tokens({"additional_special_tokens": specials})
    return fast


def _llama_text(vocab_size: int, pad_id: int, layers: int = 4, d: int = 32) -> dict:
    return dict(
        model_type="llama", vocab_size=vocab_size, hidden_size=d, intermediate_size=2 * d,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=2048, pad_token_id=pad_id,
    )


def _clip_vision(image_size: int, patch: int, d: int = 32) -> dict:
    return dict(
        model_type="clip_vision_model", hidden_size=d, intermediate_size=2 * d, num_hidden_layers=2,
        num_attention_heads=4, image_size=image_size, patch_size=patch, projection_dim=d,
    )


def build_llava(out: str | Path, image_size: int = 32, patch: int = 8, layers: int = 4, seed: int = 0) -> Path:
    """LLaVA-1.5 shaped: CLIP tower, 'default' strategy (CLS dropped), Llama decoder."""
    from transformers import (
        CLIPImageProcessorPil,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    out = Path(out)
    tokenizer = word_tokenizer(["<image>"])
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    config = LlavaConfig(
        vision_config=_clip_vision(image_size, patch),
        text_config=_llama_text(len(tokenizer), tokenizer.pad_token_id, layers),
        image_token_index=image_id, vision_feature_select_strategy="default",
        vision_feature_layer=-2, projector_hidden_act="gelu",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_llava_next(out: str | Path, tile: int = 32, patch: int = 8, layers: int = 4, seed: int = 0,
                     d: int = 32) -> Path:
    """LLaVA-NeXT shaped: AnyRes tiles of `tile` px (grid pinpoints up to 2x2), image_newline."""
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
    )

    out = Path(out)
    tokenizer = word_tokenizer(["<image>"])
    pinpoints = [[tile, 2 * tile], [2 * tile, tile], [2 * tile, 2 * tile], [tile, 3 * tile], [3 * tile, tile]]
    config = LlavaNextConfig(
        vision_config=_clip_vision(tile, patch, d),
        text_config=_llama_text(len(tokenizer), tokenizer.pad_token_id, layers, d),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="default",
        vision_feature_layer=-2, image_grid_pinpoints=pinpoints,
    )
    torch.manual_seed(seed)
    model = LlavaNextForConditionalGeneration(config).eval()
    with torch.no_grad():  # a real, non-zero newline embedding (the SAE-V code never loaded it)
        model.model.image_newline.normal_()
    ip = LlavaNextImageProcessorPil(size={"shortest_edge": tile}, crop_size={"height": tile, "width": tile},
                                    image_grid_pinpoints=pinpoints)
    processor = LlavaNextProcessor(image_processor=ip, tokenizer=tokenizer, patch_size=patch,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_qwen2_vl(out: str | Path, layers: int = 4, seed: int = 0, d: int = 32, version: str = "2",
                   max_pixels: int = 112 * 112) -> Path:
    """Qwen2-VL (version "2") or Qwen2.5-VL ("2.5") shaped: 14 px patches, 2x2 merge, mRoPE."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    from .qwen import image_only_processor

    out = Path(out)
    specials = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tokenizer = word_tokenizer(specials)
    ids = {s: tokenizer.convert_tokens_to_ids(s) for s in specials}
    text = dict(vocab_size=len(tokenizer), hidden_size=d, intermediate_size=2 * d, num_hidden_layers=layers,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]},
                pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id)
    common = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    if version == "2":
        from transformers import Qwen2VLConfig as Config
        from transformers import Qwen2VLForConditionalGeneration as Model

        vision = dict(depth=2, embed_dim=32, hidden_size=d, num_heads=4, patch_size=14, spatial_merge_size=2,
                      temporal_patch_size=2)
    else:
        from transformers import Qwen2_5_VLConfig as Config
        from transformers import Qwen2_5_VLForConditionalGeneration as Model

        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=d,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                      fullatt_block_indexes=[1])
    config = Config(text_config=text, vision_config=vision, **common)
    torch.manual_seed(seed)
    model = Model(config).eval()
    ip = Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=max_pixels, patch_size=14, merge_size=2,
                                  temporal_patch_size=2)
    processor = image_only_processor(ip, tokenizer)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_qwen2_5_vl(out: str | Path, **kwargs) -> Path:
    return build_qwen2_vl(out, version="2.5", **kwargs)


def build_idefics3(out: str | Path, frame: int = 32, patch: int = 8, layers: int = 4, seed: int = 0,
                   d: int = 32, longest_edge: int = 96, smolvlm: bool = False) -> Path:
    """Idefics3 shaped: SigLIP-like tower on `frame` px frames, image splitting up to
    longest_edge/frame tiles per side, pixel shuffle x2. smolvlm=True: the SmolVLM classes, saved
    with processor_class SmolVLMProcessor as real checkpoints are."""
    import json

    from transformers import Idefics3Processor

    if smolvlm:
        from transformers import SmolVLMConfig as Idefics3Config
        from transformers import SmolVLMForConditionalGeneration as Idefics3ForConditionalGeneration
        from transformers import SmolVLMImageProcessorPil as Idefics3ImageProcessorPil
    else:
        from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessorPil

    out = Path(out)
    rowcol = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    tokenizer = word_tokenizer(["<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>",
                                *rowcol])
    config = Idefics3Config(
        vision_config=dict(hidden_size=d, intermediate_size=2 * d, num_hidden_layers=2, num_attention_heads=4,
                           image_size=frame, patch_size=patch),
        text_config=_llama_text(len(tokenizer), tokenizer.pad_token_id, layers, d),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), scale_factor=2,
    )
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).eval()
    ip = Idefics3ImageProcessorPil(size={"longest_edge": longest_edge}, max_image_size={"longest_edge": frame})
    processor = Idefics3Processor(image_processor=ip, tokenizer=tokenizer,
                                  image_seq_len=(frame // patch) ** 2 // 4)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    if smolvlm:
        cfg_path = out / "processor_config.json"
        saved = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
        cfg_path.write_text(json.dumps({**saved, "processor_class": "SmolVLMProcessor"}))
    return out


def build_smolvlm(out: str | Path, **kwargs) -> Path:
    return build_idefics3(out, smolvlm=True, **kwargs)


def build_gemma3(out: str | Path, image_size: int = 32, patch: int = 4, tokens: int = 16, layers: int = 4,
                 seed: int = 0, d: int = 32) -> Path:
    """Gemma 3 shaped: SigLIP tower, (image_size/patch)^2 patches average-pooled to `tokens`."""
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessorPil,
        Gemma3Processor,
    )

    out = Path(out)
    names = {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"}
    tokenizer = word_tokenizer(list(names.values()), extra={"extra_special_tokens": names})
    ids = {k: tokenizer.convert_tokens_to_ids(v) for k, v in names.items()}
    config = Gemma3Config(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=d, intermediate_size=2 * d,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                         sliding_window=16, max_position_embeddings=2048, pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=d, intermediate_size=2 * d,
                           num_hidden_layers=2, num_attention_heads=4, image_size=image_size, patch_size=patch),
        mm_tokens_per_image=tokens, image_token_index=ids["image_token"], boi_token_index=ids["boi_token"],
        eoi_token_index=ids["eoi_token"],
    )
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config).eval()
    ip = Gemma3ImageProcessorPil(size={"height": image_size, "width": image_size})
    processor = Gemma3Processor(image_processor=ip, tokenizer=tokenizer, image_seq_length=tokens)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_llava_onevision(out: str | Path, tile: int = 32, patch: int = 8, max_tiles: int = 6, layers: int = 4,
                          seed: int = 0, d: int = 32) -> Path:
    """LLaVA-OneVision shaped: SigLIP tower (no CLS), Qwen2 decoder, AnyRes up to max_tiles per
    side with anyres_max_9 (large images get their tile grid shrunk)."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
    )

    from .onevision import image_only_processor

    out = Path(out)
    tokenizer = word_tokenizer(["<image>", "<video>"])
    pinpoints = [[tile * i, tile * j] for i in range(1, max_tiles + 1) for j in range(1, max_tiles + 1)]
    config = LlavaOnevisionConfig(
        vision_config=dict(model_type="siglip_vision_model", hidden_size=d, intermediate_size=2 * d,
                           num_hidden_layers=2, num_attention_heads=4, image_size=tile, patch_size=patch),
        text_config=dict(model_type="qwen2", vocab_size=len(tokenizer), hidden_size=d, intermediate_size=2 * d,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         pad_token_id=tokenizer.pad_token_id),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full", vision_feature_layer=-1, image_grid_pinpoints=pinpoints,
        vision_aspect_ratio="anyres_max_9",
    )
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.model.image_newline.normal_()
    ip = LlavaOnevisionImageProcessorPil(size={"height": tile, "width": tile}, image_grid_pinpoints=pinpoints,
                                         do_center_crop=False)
    processor = image_only_processor(ip, tokenizer, (tile // patch) ** 2, "anyres_max_9")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_chameleon(out: str | Path, image_size: int = 32, n_codes: int = 64, layers: int = 4, seed: int = 0,
                    d: int = 32) -> Path:
    """Chameleon shaped: a VQ-VAE with two resolution levels (a 16x16 code grid on 32 px images)
    whose codes are vocabulary tokens named IMGIMG<digits as letters A-J>Z."""
    from transformers import (
        ChameleonConfig,
        ChameleonForConditionalGeneration,
        ChameleonImageProcessorPil,
        ChameleonProcessor,
    )

    out = Path(out)
    letters = lambda i: "".join(chr(ord("A") + int(ch)) for ch in str(i))
    codes = [f"IMGIMG{letters(i)}Z" for i in range(n_codes)]
    tokenizer = word_tokenizer(["<image>", "<racm3:break>", "<eoss>", "<sep>", *codes],
                               extra={"sep_token": "<sep>"})
    config = ChameleonConfig(
        vocab_size=len(tokenizer), hidden_size=d, intermediate_size=2 * d, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, vocabulary_map=dict(tokenizer.get_vocab()),
        vq_config=dict(embed_dim=32, num_embeddings=n_codes, latent_channels=32, resolution=image_size,
                       base_channels=32, channel_multiplier=[1, 2], num_res_blocks=1, attn_resolutions=[]),
    )
    torch.manual_seed(seed)
    model = ChameleonForConditionalGeneration(config).eval()
    ip = ChameleonImageProcessorPil(size={"shortest_edge": image_size},
                                    crop_size={"height": image_size, "width": image_size})
    grid = image_size // 2
    processor = ChameleonProcessor(image_processor=ip, tokenizer=tokenizer, image_seq_length=grid * grid)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
