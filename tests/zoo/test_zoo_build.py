import os

import numpy as np
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, CLIPModel, CLIPProcessor

from mmsae.world import World
from mmsae.world.text import chat_prompt, chat_turns, questions
from mmsae.zoo import build
from mmsae.zoo.data import to_pixels
from mmsae.zoo.lm import build_sequence, lm_loss

TINY = (build.TowerSpec(hidden=32, layers=1, heads=2), build.DecoderSpec(hidden=32, layers=2, heads=2, intermediate=64))


def test_llava_round_trips_through_auto_classes_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = build.build_tokenizer()
    model, processor = build.build_llava(*TINY, tok)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    proc = AutoProcessor.from_pretrained(tmp_path)
    scene = World()[0]
    enc = proc(images=[scene.pil], text=[chat_prompt("what colour is the star ?")], return_tensors="pt")
    image_id = proc.tokenizer.convert_tokens_to_ids("<image>")
    assert int((enc["input_ids"] == image_id).sum()) == 64  # 8x8 patches, CLS dropped
    with torch.no_grad():
        assert torch.allclose(loaded(**enc).logits, model.eval()(**enc).logits, atol=1e-6)


def test_clip_round_trips(tmp_path):
    tok = build.build_tokenizer()
    model, processor = build.build_clip(TINY[0], tok)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded, proc = CLIPModel.from_pretrained(tmp_path), CLIPProcessor.from_pretrained(tmp_path)
    enc = proc(images=[World()[1].pil], text=["a red star .", "sand"], return_tensors="pt", padding=True)
    assert loaded(**enc).logits_per_image.shape == (1, 2)


def test_teacher_forced_loss_equals_the_public_forward():
    """The zoo trains on (features, ids) directly; it must compute what the HF forward computes."""
    torch.manual_seed(0)
    tok = build.build_tokenizer()
    model, processor = build.build_llava(*TINY, tok)
    model.eval()
    rng = np.random.default_rng(0)
    scenes = [World()[i] for i in range(3)]
    turns = [chat_turns(questions(s, rng)[:2]) for s in scenes]
    seqs = [build_sequence(tok, t, 64) for t in turns]
    feats = model.model.vision_tower(pixel_values=to_pixels(np.stack([s.image for s in scenes]))).last_hidden_state[:, 1:]
    image_id = tok.convert_tokens_to_ids("<image>")
    ours, _ = lm_loss(model, feats.reshape(-1, feats.shape[-1]), seqs, image_id, tok.pad_token_id)

    texts = [" ".join(p + " " + a for p, a in t) for t in turns]
    tok.padding_side = "right"
    enc = processor(images=[s.pil for s in scenes], text=texts, return_tensors="pt", padding=True)
    labels = torch.full_like(enc["input_ids"], -100)
    for i, s in enumerate(seqs):
        assert enc["input_ids"][i, : len(s.ids)].tolist() == s.ids
        labels[i, : len(s.labels)] = torch.tensor(s.labels)
    logits = model(**enc).logits
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
    assert torch.allclose(ours, ref, atol=1e-5)
