"""The paper's scale on one GPU: TopK training (mmsae vs eai-sparsify vs SAELens) and harvest.

    python benchmarks/gpu_paper_scale.py --out gpu_paper_scale.json         # CUDA, < 8 min on an H100
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/gpu_paper_scale.py --tiny --out tiny.json   # CPU, < 60 s

One process, one device, every part under its own time cap (`time.*_s` says what each took):

- `device.*`: the device's bf16 matmul rate, measured here (square products, best repetition). The
  floors below are FLOP counts at this rate.
- `train.*`: TopK SAE training at d_in 4096, 2^17 latents, k 256, batch 4096 (the paper's setting;
  `--tiny`: 64, 1024, 16, 256) on the same synthetic activations, each implementation in turn:
  tokens/s over the steps after the warm-up (as many as fit in `--train-cap-s`), FVU on a held-out
  batch, peak memory (`torch.cuda.max_memory_allocated`, from a reset before each; it includes the
  activations, `train.data_gib`). The step
  floor is the one dense product a TopK step cannot avoid, 2·B·d_in·F FLOP, at the device's bf16 rate;
  `train.fraction_of_floor.<impl>` = floor time / step time. mmsae trains with its own defaults (bf16
  autocast on CUDA, bf16 selection with exact values); sparsify under bf16 autocast as its trainer
  does; SAELens in float32, its runner's default. A peer that is not installed is skipped with the
  reason (`train.skipped.<impl>`); nothing is installed by this script.
- `harvest.*`: `mmsae harvest`'s own loop (the store's capture and shard writes, `store.harvest._run`)
  on a random model with LLaVA-NeXT-8B's shapes (CLIP-L/14 at 336 px, AnyRes up to 672 px, Llama
  4096 x 14336) built from its config offline, in bf16 on GPU, the decoder truncated after block 25
  (the block harvested: nothing later runs), on world images at 672 px with the prompt "<image>".
  The floor counts only the decoder blocks' weight products, 2·params·tokens.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

PAPER = dict(d_in=4096, latents=2**17, k=256, batch=4096, layer=25, image_size=672, records_per_shard=8)
TINY = dict(d_in=64, latents=1024, k=16, batch=256, layer=2, image_size=64, records_per_shard=4)
IMPLS = ("mmsae", "sparsify", "saelens")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bf16_tflops(device: str, n: int, reps: int = 10) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    a @ b
    sync(device)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e12


def make_acts(n_batches: int, batch: int, d: int, device: str, seed: int = 0) -> list[torch.Tensor]:
    """Sparse non-negative mixtures of 4d random unit directions, plus an offset and noise (FVU means
    something), as benchmarks/train_throughput.py makes them; generated on the device."""
    g = torch.Generator(device=device).manual_seed(seed)
    dirs = torch.randn(4 * d, d, generator=g, device=device)
    dirs /= dirs.norm(dim=1, keepdim=True)
    out = []
    for _ in range(n_batches):
        on = torch.rand(batch, 4 * d, generator=g, device=device) < 16 / (4 * d)
        z = on * torch.rand(batch, 4 * d, generator=g, device=device) * 4
        out.append(z @ dirs + 0.05 * torch.randn(batch, d, generator=g, device=device) + 1.0)
    return out


def fvu64(x: torch.Tensor, xhat: torch.Tensor) -> float:
    x, xhat = x.double(), xhat.double()
    return float(((x - xhat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


# -- one implementation per function: (step_fn, reconstruct_fn, precision) -----------------------
def setup_mmsae(p, first, device):
    from mmsae.train import TensorBatches, TrainConfig, Trainer

    cfg = TrainConfig(kind="topk", n_latents=p["latents"], k=p["k"], steps=10**6, warmup_steps=1, decay_fraction=0.0,
                      normalize=False, checkpoint_every=10**9, log_every=10**9, device=device)
    trainer = Trainer(cfg, TensorBatches(first, first.shape[0]), tempfile.mkdtemp(prefix="mmsae-gpu-"))
    trainer._initialise(first)

    def recon(x):
        with torch.no_grad():
            return trainer.sae.decode(trainer.sae.encode(x))

    autocast = "bf16 autocast" if trainer.cfg.autocast and device.startswith("cuda") else "fp32"
    return trainer._train_step, recon, f"{autocast}, {trainer.selection['dtype']} selection"


def setup_sparsify(p, first, device):
    from sparsify import SparseCoder, SparseCoderConfig

    torch.manual_seed(0)
    sae = SparseCoder(p["d_in"], SparseCoderConfig(num_latents=p["latents"], k=p["k"]), device=device)
    with torch.no_grad():
        sae.b_dec.copy_(first.mean(0))
    opt = torch.optim.Adam(sae.parameters(), lr=2e-4 / (p["latents"] / 2**14) ** 0.5, eps=6.25e-10)
    since_fired = torch.zeros(p["latents"], dtype=torch.long, device=device)
    on_cuda = device.startswith("cuda")

    def step(x):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda):
            out = sae(x, dead_mask=since_fired >= 10_000_000)
            loss = out.fvu + out.auxk_loss / 32
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        sae.set_decoder_norm_to_unit_norm()
        since_fired.add_(x.shape[0])
        since_fired[out.latent_indices.flatten()] = 0

    def recon(x):
        with torch.no_grad():
            enc = sae.encode(x)
            return sae.decode(enc.top_acts, enc.top_indices)

    return step, recon, "bf16 autocast" if on_cuda else "fp32"


def setup_saelens(p, first, device):
    from sae_lens.saes.sae import TrainStepInput
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    torch.manual_seed(0)
    cfg = TopKTrainingSAEConfig(d_in=p["d_in"], d_sae=p["latents"], k=p["k"], aux_loss_coefficient=1 / 32,
                                device=device)
    sae = TopKTrainingSAE(cfg).to(device)
    with torch.no_grad():
        sae.b_dec.copy_(first.mean(0))
    opt = torch.optim.Adam(sae.parameters(), lr=2e-4 / (p["latents"] / 2**14) ** 0.5)
    since_fired = torch.zeros(p["latents"], dtype=torch.long, device=device)
    coeffs = {k: (v.value if hasattr(v, "value") else v) for k, v in sae.get_coefficients().items()}

    def step(x):
        out = sae.training_forward_pass(TrainStepInput(x, coeffs, since_fired >= 10_000_000, 0, False))
        with torch.no_grad():
            fired = (out.feature_acts > 0).sum(-2) > 0
            since_fired.add_(x.shape[0])
            since_fired[fired] = 0
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        opt.step()

    def recon(x):
        with torch.no_grad():
            return sae.decode(sae.encode(x))

    return step, recon, "fp32"


SETUPS = {"mmsae": setup_mmsae, "sparsify": setup_sparsify, "saelens": setup_saelens}


def train_one(impl: str, p: dict, acts: list[torch.Tensor], device: str, cap_s: float, warmup: int,
              max_steps: int) -> dict:
    """Tokens/s over the timed steps (at least 1, at most max_steps, stopping once cap_s is spent)."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    t_start = time.perf_counter()
    step, recon, precision = SETUPS[impl](p, acts[0], device)
    train_acts, held_out = acts[:-1], acts[-1]
    for i in range(warmup):
        step(train_acts[i % len(train_acts)])
    sync(device)
    t0, n = time.perf_counter(), 0
    while n < max_steps and (n == 0 or time.perf_counter() - t_start < cap_s):
        for _ in range(min(5, max_steps - n)):  # no sync between these: the next step's launches overlap
            step(train_acts[(warmup + n) % len(train_acts)])
            n += 1
        sync(device)  # the cap is checked on real time, not on queued kernels
    elapsed = time.perf_counter() - t0
    out = {"tokens_per_s": n * p["batch"] / elapsed, "step_s": elapsed / n, "steps_timed": n,
           "fvu": fvu64(held_out, recon(held_out)), "precision": precision}
    if device.startswith("cuda"):
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


# -- harvest ---------------------------------------------------------------------------------------
def llava_next_8b_shaped(n_blocks: int, device: str):
    """(model, processor): LLaVA-NeXT-8B's shapes, random bf16 weights built on the device, n_blocks
    decoder blocks."""
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
    )

    from mmsae.models.tiny import word_tokenizer

    tok = word_tokenizer(["<image>"])
    pinpoints = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
    cfg = LlavaNextConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096,
                           num_hidden_layers=24, num_attention_heads=16, image_size=336, patch_size=14,
                           projection_dim=768),
        text_config=dict(model_type="llama", vocab_size=len(tok), hidden_size=4096, intermediate_size=14336,
                         num_hidden_layers=n_blocks, num_attention_heads=32, num_key_value_heads=8,
                         pad_token_id=tok.pad_token_id),
        image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="default",
        vision_feature_layer=-2, image_grid_pinpoints=pinpoints,
    )
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlavaNextForConditionalGeneration(cfg).eval()
    finally:
        torch.set_default_dtype(default)
    ip = LlavaNextImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                    image_grid_pinpoints=pinpoints)
    processor = LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=14,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1)
    return model, processor


def tiny_llava_next(n_blocks: int, tmp: Path):
    from transformers import AutoProcessor, LlavaNextForConditionalGeneration

    from mmsae.models.tiny import build_llava_next

    path = build_llava_next(tmp / "tiny-next", layers=n_blocks, d=32)
    return LlavaNextForConditionalGeneration.from_pretrained(path).eval(), AutoProcessor.from_pretrained(path)


def decoder_block_params(model) -> int:
    layers = model.model.language_model.layers
    return sum(p.numel() for p in layers.parameters())


def harvest_part(p: dict, device: str, tiny: bool, tmp: Path, cap_s: float, peak_tflops: float) -> dict:
    """Shard after shard of the store's real harvest loop until cap_s is spent; the first batch,
    run once before timing, pays for kernel selection and allocator growth."""
    from mmsae.data import open_source
    from mmsae.models import load_adapter
    from mmsae.store import HarvestConfig
    from mmsae.store.harvest import _run
    from mmsae.store.shard import read_meta
    from mmsae.store.stream import capture_batches

    t_build = time.perf_counter()
    n_blocks = p["layer"] + 1  # nothing after the harvested block runs, so it need not exist
    model, processor = tiny_llava_next(n_blocks, tmp) if tiny else llava_next_8b_shaped(n_blocks, device)
    adapter = load_adapter(model, processor, device=device)
    sync(device)
    out = {"build_s": time.perf_counter() - t_build, "blocks": n_blocks, "layer": p["layer"],
           "d_model": adapter.d_model, "decoder_block_params": decoder_block_params(model)}
    batch = 2 if tiny else 8
    n_records = 10_000
    cfg = HarvestConfig(out=str(tmp / "store"), model="(in memory)", layer=p["layer"], prompt="<image>",
                        data=f"world:n={n_records},seed=0,image_size={p['image_size']}", batch_size=batch,
                        records_per_shard=p["records_per_shard"], progress=False)
    source = open_source(cfg.data, prompt=cfg.prompt, max_pixels=cfg.max_image_pixels)
    root = Path(cfg.out)
    root.mkdir(parents=True)
    for _ in capture_batches(adapter, source, range(batch), p["layer"], batch, lambda *a: None):
        pass  # warm-up
    sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    t0, tokens, records, k = time.perf_counter(), 0, 0, 0
    while k == 0 or (time.perf_counter() - t0 < cap_s and (k + 1) * cfg.records_per_shard <= n_records):
        _run(cfg, adapter, source, root, [k], n_records, 0)
        meta = read_meta(root, k)
        tokens += sum(meta["tokens"].values())
        records += meta["n_samples"]
        k += 1
    sync(device)
    elapsed = time.perf_counter() - t0
    floor_s = 2 * out["decoder_block_params"] * tokens / (peak_tflops * 1e12)
    out.update(tokens_per_s=tokens / elapsed, records_per_s=records / elapsed, tokens=tokens, records=records,
               shards=k, seconds=elapsed, tokens_per_record=tokens / max(records, 1),
               decoder_floor_fraction=floor_s / elapsed)
    if device.startswith("cuda"):
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="small shapes on CPU (a smoke test, < 60 s)")
    ap.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument("--train-cap-s", type=float, default=None, help="per implementation (default 75; tiny 4)")
    ap.add_argument("--harvest-cap-s", type=float, default=None, help="timed harvest (default 90; tiny 3)")
    ap.add_argument("--no-harvest", action="store_true")
    ap.add_argument("--out", default=None, help="write the flat JSON here (it is printed too)")
    args = ap.parse_args()
    device = args.device or ("cpu" if args.tiny else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU, or pass --tiny for the CPU smoke test")
    p = TINY if args.tiny else PAPER
    train_cap = args.train_cap_s or (4.0 if args.tiny else 75.0)
    harvest_cap = args.harvest_cap_s or (3.0 if args.tiny else 90.0)
    report: dict = {"config.tiny": args.tiny, "config.device": device, "torch": torch.__version__,
                    **{f"config.{k}": v for k, v in p.items()}}
    t_all = time.perf_counter()

    t = time.perf_counter()
    report["device.name"] = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    tflops = bf16_tflops(device, 256 if args.tiny else 8192)
    report["device.bf16_matmul_tflops"] = tflops
    report["time.device_s"] = time.perf_counter() - t

    t = time.perf_counter()
    acts = make_acts(5, p["batch"], p["d_in"], device)
    floor_s = 2 * p["batch"] * p["d_in"] * p["latents"] / (tflops * 1e12)
    report["train.step_floor_s"] = floor_s
    report["train.data_gib"] = sum(a.numel() * a.element_size() for a in acts) / 2**30  # inside each peak
    for impl in args.impls.split(","):
        if impl not in SETUPS:
            raise SystemExit(f"--impls: unknown {impl!r}; valid: {', '.join(IMPLS)}")
        try:
            r = train_one(impl, p, acts, device, train_cap, warmup=2 if args.tiny else 3, max_steps=50)
        except ImportError as e:
            report[f"train.skipped.{impl}"] = f"not installed: {e}"
            continue
        except Exception as e:  # noqa: BLE001 - one peer's API drift must not cost the other parts
            traceback.print_exc()
            report[f"train.error.{impl}"] = f"{type(e).__name__}: {e}"
            continue
        finally:
            gc.collect()
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        for key, v in r.items():
            report[f"train.{key}.{impl}"] = v
        report[f"train.fraction_of_floor.{impl}"] = floor_s / r["step_s"]
    for peer in ("sparsify", "saelens"):
        if f"train.tokens_per_s.{peer}" in report and "train.tokens_per_s.mmsae" in report:
            report[f"train.ratio_to_{peer}"] = report["train.tokens_per_s.mmsae"] / report[f"train.tokens_per_s.{peer}"]
    del acts
    report["time.train_s"] = time.perf_counter() - t

    if not args.no_harvest:
        t = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix="mmsae-gpu-harvest-"))
        try:
            for key, v in harvest_part(p, device, args.tiny, tmp, harvest_cap, tflops).items():
                report[f"harvest.{key}"] = v
        except Exception as e:  # noqa: BLE001 - the training numbers above still get written
            traceback.print_exc()
            report["harvest.error"] = f"{type(e).__name__}: {e}"
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        report["time.harvest_s"] = time.perf_counter() - t
    report["time.total_s"] = time.perf_counter() - t_all
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    sys.exit(main())
