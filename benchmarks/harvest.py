"""Harvest throughput: `mmsae harvest` against a plain `model(..., output_hidden_states=True)` loop.

    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/harvest.py [--n 64] [--layer 1] [--json]
    python benchmarks/harvest.py --device cuda --big      # LLaVA-NeXT-8B-shaped random weights, bf16

Models: the zoo subject model (when its weights exist) and a tiny random LLaVA-NeXT built here
(`--big`: a random model with LLaVA-NeXT-8B's shapes: CLIP-L/14 at 336 px, 32 x 4096 Llama).
Data: world images with the prompt "<image>" (the paper's caching prompt), the same records for
every method. Reported per model, all in the same process and on the same device:
  - plain:        processor + full forward with output_hidden_states, hidden_states[L+1] to CPU
  - capture:      processor + adapter.capture (early exit after block L), to CPU
  - capture_full: same without early exit (the early-exit saving is capture vs this)
  - harvest:      the whole `harvest()` (data loading, rejects, store writes, statistics)
and the ratio capture/capture_full of model-only time next to (L+1)/N, the expected cost.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch


def _big_next(out: Path) -> Path:
    """LLaVA-NeXT-8B shapes (random weights): 576 base tokens + AnyRes tiles per image."""
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
    )

    from mmsae.models.tiny import word_tokenizer

    tok = word_tokenizer(["<image>"])
    cfg = LlavaNextConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096,
                           num_hidden_layers=24, num_attention_heads=16, image_size=336, patch_size=14,
                           projection_dim=768),
        text_config=dict(model_type="llama", vocab_size=len(tok), hidden_size=4096, intermediate_size=14336,
                         num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                         pad_token_id=tok.pad_token_id),
        image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="default",
        vision_feature_layer=-2, image_grid_pinpoints=[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
    )
    with torch.device("meta"):
        LlavaNextForConditionalGeneration(cfg)  # fail fast on a bad config before allocating
    model = LlavaNextForConditionalGeneration(cfg).to(torch.bfloat16).eval()
    ip = LlavaNextImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                    image_grid_pinpoints=cfg.image_grid_pinpoints)
    LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
                       num_additional_image_tokens=1).save_pretrained(out)
    model.save_pretrained(out)
    return out


def _batches(n: int, batch: int, image_size: int):
    from mmsae.models import Prompt
    from mmsae.world import World, WorldConfig

    world = World(WorldConfig(seed=0, image_size=image_size))
    samples = [Prompt([world[i].pil], "") for i in range(n)]
    return [samples[i:i + batch] for i in range(0, n, batch)]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time_loop(adapter, batches, fn, device: str) -> tuple[float, int]:
    fn(adapter.encode(batches[0]))  # warm-up (kernels, allocator, lazy init)
    _sync(device)
    t0, tokens = time.perf_counter(), 0
    for b in batches:
        enc = adapter.encode(b)
        fn(enc)
        tokens += int(enc.inputs["attention_mask"].sum())
    _sync(device)
    return time.perf_counter() - t0, tokens


def bench_model(name: str, path: Path, layer: int, n: int, batch: int, device: str, dtype: str | None,
                image_size: int) -> dict:
    from mmsae.models import load_adapter
    from mmsae.store import HarvestConfig, harvest

    torch_dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32, None: None}[dtype]
    adapter = load_adapter(path, dtype=torch_dtype, device=device)
    batches = _batches(n, batch, image_size)

    def plain(enc):
        with torch.inference_mode():
            out = adapter.model(**adapter._to_device(enc.inputs), output_hidden_states=True, use_cache=False)
        out.hidden_states[layer + 1].float().cpu()

    def capture(enc, early=True):
        adapter.capture(enc.inputs, layer, early_exit=early).float().cpu()

    res = {"model": name, "layers": adapter.n_layers, "layer": layer, "d_model": adapter.d_model,
           "device": device, "records": n, "batch": batch}
    for key, fn in (("plain", plain), ("capture", capture), ("capture_full", lambda e: capture(e, False))):
        sec, tok = _time_loop(adapter, batches, fn, device)
        res[f"{key}_tok_s"] = tok / sec
        res[f"{key}_s"] = sec
    # model-only cost of early exit: time forward passes on pre-encoded inputs
    encs = [adapter.encode(b) for b in batches]
    model_s = {}
    for early in (True, False):
        _sync(device)
        t0 = time.perf_counter()
        for e in encs:
            adapter.capture(e.inputs, layer, early_exit=early)
        _sync(device)
        model_s[early] = time.perf_counter() - t0
    res["early_exit_cost"] = model_s[True] / model_s[False]
    res["expected_cost"] = (layer + 1) / adapter.n_layers
    adapter = None  # free the model before harvest() loads its own copy
    out = Path(tempfile.mkdtemp(prefix="mmsae-bench-store-"))
    try:
        t0 = time.perf_counter()
        m = harvest(HarvestConfig(out=str(out), model=str(path), layer=layer,
                                  data=f"world:n={n},seed=0,image_size={image_size}", prompt="<image>",
                                  batch_size=batch, records_per_shard=max(batch, n // 4), device=device,
                                  model_dtype=dtype, progress=False))
        sec = time.perf_counter() - t0  # includes model loading, as a user of the command sees it
        res["harvest_tok_s"] = (m["counts"]["tokens"]["image"] + m["counts"]["tokens"]["text"]
                                + m["counts"]["tokens"]["special"]) / sec
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64, help="world records per method")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--layer", type=int, default=None, help="default: the middle block")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--big", action="store_true", help="add the LLaVA-NeXT-8B-shaped model (needs a GPU)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="mmsae-bench-"))
    results = []
    try:
        from mmsae.models.tiny import build_llava_next

        models = [("tiny-llava-next", build_llava_next(tmp / "next", layers=8, d=128), None, 64)]
        try:
            from mmsae.zoo import model_dir

            models.insert(0, ("zoo-subject", model_dir("subject"), None, 64))
        except (ImportError, FileNotFoundError, ValueError) as e:
            print(f"(zoo subject model unavailable: {e})")
        if args.big:
            models.append(("llava-next-8b-shaped", _big_next(tmp / "big"), "bfloat16", 672))
        for name, path, dtype, size in models:
            from transformers import AutoConfig

            n_layers = AutoConfig.from_pretrained(path).get_text_config().num_hidden_layers
            layer = args.layer if args.layer is not None else n_layers // 2
            results.append(bench_model(name, path, layer, args.n, args.batch, args.device, dtype, size))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print(f"{'model':22} {'L/N':>6} {'plain':>10} {'capture':>10} {'no-exit':>10} {'harvest':>10} "
          f"{'exit cost':>9} {'(L+1)/N':>8}   tokens/s")
    for r in results:
        print(f"{r['model']:22} {r['layer']:>2}/{r['layers']:<3} {r['plain_tok_s']:>10,.0f} "
              f"{r['capture_tok_s']:>10,.0f} {r['capture_full_tok_s']:>10,.0f} {r['harvest_tok_s']:>10,.0f} "
              f"{r['early_exit_cost']:>9.2f} {r['expected_cost']:>8.2f}")


if __name__ == "__main__":
    main()
