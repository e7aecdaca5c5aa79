import sys
from pathlib import Path

import pytest

# tests/index_fixture.py builds tiny feature indexes that follow the shared index contract
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    import torch

    from mmsae.zoo import build

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("clip")
    model, processor = build.build_clip(build.TowerSpec(hidden=32, layers=1, heads=2), build.build_tokenizer())
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_grounded_sam(tmp_path_factory):
    """Tiny random GroundingDINO (Swin + BERT) and SAM checkpoints with their processors, built offline."""
    import torch
    from transformers import (BertConfig, BertTokenizerFast, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoProcessor, SamConfig, SamMaskDecoderConfig, SamModel, SamProcessor,
                              SamPromptEncoderConfig, SamVisionConfig, SwinConfig)
    from transformers.models.grounding_dino.image_processing_pil_grounding_dino import GroundingDinoImageProcessorPil
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    root = tmp_path_factory.mktemp("gsam")
    torch.manual_seed(0)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "red", "star", "grass", "sky", "a", "the"]
    (root / "vocab.txt").write_text("\n".join(words))
    tok = BertTokenizerFast(vocab_file=str(root / "vocab.txt"))
    backbone = SwinConfig(image_size=128, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                          window_size=2, out_features=["stage2", "stage3", "stage4"])
    text = BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=64)
    # GroupNorm(32, d_model) in the input projections: d_model must be a multiple of 32; decoder_layers >= 2
    gd_cfg = GroundingDinoConfig(backbone_config=backbone, text_config=text, d_model=32, encoder_layers=1,
                                 decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2,
                                 decoder_attention_heads=2, num_queries=10, max_text_len=32, encoder_n_points=1,
                                 decoder_n_points=1, disable_custom_kernels=True)
    gd = root / "grounding-dino"
    GroundingDinoForObjectDetection(gd_cfg).save_pretrained(gd)
    GroundingDinoProcessor(image_processor=GroundingDinoImageProcessorPil(size={"shortest_edge": 128, "longest_edge": 128}),
                           tokenizer=tok).save_pretrained(gd)
    sam_cfg = SamConfig(  # the vision num_pos_feats must be half the prompt encoder's hidden size
        vision_config=SamVisionConfig(hidden_size=16, output_channels=8, num_hidden_layers=1, num_attention_heads=2,
                                      image_size=64, patch_size=8, mlp_dim=32, global_attn_indexes=[0],
                                      num_pos_feats=4, window_size=2),
        prompt_encoder_config=SamPromptEncoderConfig(hidden_size=8, image_size=64, patch_size=8, mask_input_channels=4),
        mask_decoder_config=SamMaskDecoderConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, mlp_dim=16,
                                                 iou_head_hidden_dim=8))
    sam = root / "sam"
    SamModel(sam_cfg).save_pretrained(sam)
    SamProcessor(image_processor=SamImageProcessorPil(size={"longest_edge": 64},
                                                      pad_size={"height": 64, "width": 64})).save_pretrained(sam)
    return gd, sam
