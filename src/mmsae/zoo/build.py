"""Build the zoo's tokenizer, processors and model configs offline, in standard Hugging Face formats."""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPProcessor,
    CLIPTextConfig,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from ..world.text import BOS, CHAT_TEMPLATE, EOS, IMAGE, PAD, SPECIAL_TOKENS, UNK, vocabulary


@dataclass(frozen=True)
class TowerSpec:
    image_size: int = 64
    patch_size: int = 8
    hidden: int = 128
    layers: int = 4
    heads: int = 4


@dataclass(frozen=True)
class DecoderSpec:
    hidden: int = 128
    layers: int = 6
    heads: int = 4
    intermediate: int = 512


SUBJECT = (TowerSpec(), DecoderSpec())
# The explainer reads up to five masked images, so its tower uses 16-pixel patches (16 tokens an image)
# and its decoder is wider: a larger LMM of the same architecture, as in the paper's 8B -> 72B pairing.
EXPLAINER = (TowerSpec(patch_size=16, hidden=128, layers=4), DecoderSpec(hidden=192, layers=6, heads=6, intermediate=640))


def build_tokenizer(wrap: bool = False) -> PreTrainedTokenizerFast:
    """The world's word-level tokenizer. The LMMs' prompts carry <s> themselves; CLIP's text tower pools at
    </s>, so its tokenizer (`wrap=True`) adds <s> ... </s> around every text."""
    words = list(SPECIAL_TOKENS) + vocabulary()
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(IMAGE, behavior="isolated"), pre_tokenizers.Whitespace()]
    )
    if wrap:
        core.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A {EOS}", special_tokens=[(BOS, words.index(BOS)), (EOS, words.index(EOS))]
        )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        extra_special_tokens={"image_token": IMAGE}, chat_template=CHAT_TEMPLATE,
    )
    tok.add_special_tokens({"additional_special_tokens": [IMAGE]})
    return tok


def image_processor(tower: TowerSpec) -> CLIPImageProcessorPil:
    # world images are already tower-sized; any other image is resized (shortest edge) and centre-cropped
    return CLIPImageProcessorPil(
        size={"shortest_edge": tower.image_size},
        crop_size={"height": tower.image_size, "width": tower.image_size},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], do_convert_rgb=True,
    )


def vision_config(tower: TowerSpec) -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=tower.hidden, intermediate_size=4 * tower.hidden, num_hidden_layers=tower.layers,
        num_attention_heads=tower.heads, image_size=tower.image_size, patch_size=tower.patch_size,
        projection_dim=tower.hidden,
    )


def build_llava(tower: TowerSpec, decoder: DecoderSpec, tok: PreTrainedTokenizerFast) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    text = LlamaConfig(
        hidden_size=decoder.hidden, intermediate_size=decoder.intermediate, num_hidden_layers=decoder.layers,
        num_attention_heads=decoder.heads, num_key_value_heads=decoder.heads, vocab_size=len(tok),
        max_position_embeddings=512, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, tie_word_embeddings=False,
    )
    cfg = LlavaConfig(
        vision_config=vision_config(tower), text_config=text, image_token_index=tok.convert_tokens_to_ids(IMAGE),
        vision_feature_layer=-1, vision_feature_select_strategy="default", projector_hidden_act="gelu",
        image_seq_length=(tower.image_size // tower.patch_size) ** 2, pad_token_id=tok.pad_token_id,
    )
    model = LlavaForConditionalGeneration(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    processor = LlavaProcessor(
        image_processor=image_processor(tower), tokenizer=tok, patch_size=tower.patch_size,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE, image_token=IMAGE,
    )
    return model, processor


def build_clip(tower: TowerSpec, tok: PreTrainedTokenizerFast | None = None) -> tuple[CLIPModel, CLIPProcessor]:
    tok = build_tokenizer(wrap=True)
    text = CLIPTextConfig(
        vocab_size=len(tok), hidden_size=128, intermediate_size=512, num_hidden_layers=3, num_attention_heads=4,
        max_position_embeddings=48, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, projection_dim=128,
    )
    cfg = CLIPConfig(text_config=text.to_dict(), vision_config=vision_config(tower).to_dict(), projection_dim=128)
    return CLIPModel(cfg), CLIPProcessor(image_processor=image_processor(tower), tokenizer=tok)
