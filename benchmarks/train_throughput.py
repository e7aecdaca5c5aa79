"""TopK SAE training throughput: mmsae vs eai-sparsify vs sae-lens on the same activations.

Run with a Python that has the peers installed and mmsae on the path, e.g.

    OMP_NUM_THREADS=2 PYTHONPATH=src /work/peers-venv/bin/python benchmarks/train_throughput.py --json

Each implementation runs in its own subprocess (so peak RSS is its own) on identical synthetic
activations: sparse non-negative combinations of random unit directions plus an offset and noise,
so that FVU is meaningful. Every implementation trains with fp32 Adam, the same lr, the same
batch, AuxK where it has it, gradient clipping where its own trainer clips. Tokens/s is measured
over the steps after `--warmup-steps` (with `--repeats N`, the best of N round-robin runs); FVU
(mean-centred, float64) on a held-out batch at the end.
The script also measures the encoder-shaped GEMM in fp32 and bf16 on this machine, the ceilings
for one step, and reports each implementation's fraction of them.

Rows: `mmsae` is mmsae's default configuration (selection_dtype="auto": the dense selection
product in bf16 where the CPU multiplies bf16 natively, exact fp32 values deciding among its
top k + margin; the row reports the dtype it resolved to); `mmsae_fp32` the exact fp32 product.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

IMPLS = ("mmsae", "mmsae_fp32", "sparsify", "saelens")


def make_acts(n: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n_feat = 4 * d
    dirs = torch.randn(n_feat, d, generator=g)
    dirs /= dirs.norm(dim=1, keepdim=True)
    acts = torch.empty(n, d)
    for lo in range(0, n, 4096):  # bounded memory for the [n, n_feat] codes
        hi = min(n, lo + 4096)
        z = (torch.rand(hi - lo, n_feat, generator=g) < 16 / n_feat).float() * torch.rand(hi - lo, n_feat, generator=g) * 4
        acts[lo:hi] = z @ dirs + 0.05 * torch.randn(hi - lo, d, generator=g)
    return acts + 1.0


def fvu64(x: torch.Tensor, xhat: torch.Tensor) -> float:
    x, xhat = x.double(), xhat.double()
    return float(((x - xhat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


def gemm_gflops(b: int, d: int, f: int, dtype: torch.dtype, reps: int = 7) -> float:
    """The encoder-shaped product's rate, from its fastest repetition (the least disturbed)."""
    a, w = torch.randn(b, d, dtype=dtype), torch.randn(d, f, dtype=dtype)
    a @ w
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ w
        best = min(best, time.perf_counter() - t)
    return 2 * b * d * f / best / 1e9


# -- one implementation per function: returns (step_fn, reconstruct_fn) -------------------------
def setup_mmsae(args, first, selection_dtype="auto"):
    """mmsae's real training step (Trainer._train_step: AuxK, dead-latent clock, clipping, Adam).

    The default ("auto") is mmsae's default configuration: the selection product in bf16 where
    the CPU multiplies bf16 natively, the k values and all gradients in fp32. "float32": exact."""
    from mmsae.train import TensorBatches, TrainConfig, Trainer

    cfg = TrainConfig(kind="topk", n_latents=args.latents, k=args.k, steps=args.steps + args.warmup_steps, lr=args.lr,
                      warmup_steps=1, decay_fraction=0.0, normalize=False, checkpoint_every=10**9, log_every=10**9,
                      dead_tokens=args.dead_tokens, auxk_alpha=args.auxk_alpha, selection_dtype=selection_dtype)
    trainer = Trainer(cfg, TensorBatches(first, first.shape[0]), tempfile.mkdtemp(prefix="mmsae-bench-"))
    trainer._initialise(first)

    def recon(x):
        with torch.no_grad():
            return trainer.sae.decode(trainer.sae.encode(x))

    recon.selection_dtype = str(trainer.sae.selection_dtype).removeprefix("torch.")
    return trainer._train_step, recon


def setup_sparsify(args, first):
    from sparsify import SparseCoder, SparseCoderConfig

    torch.manual_seed(0)
    sae = SparseCoder(args.d_in, SparseCoderConfig(num_latents=args.latents, k=args.k))
    with torch.no_grad():  # sparsify's trainer: b_dec = geometric median is not used; it uses the mean
        sae.b_dec.copy_(first.mean(0))
    opt = torch.optim.Adam(sae.parameters(), lr=args.lr, eps=6.25e-10)
    since_fired = torch.zeros(args.latents, dtype=torch.long)

    def step(x):
        dead = since_fired >= args.dead_tokens
        out = sae(x, dead_mask=dead)
        loss = out.fvu + args.auxk_alpha * out.auxk_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        sae.set_decoder_norm_to_unit_norm()
        since_fired.add_(x.shape[0])
        since_fired[out.latent_indices.flatten().unique()] = 0

    def recon(x):
        with torch.no_grad():
            enc = sae.encode(x)
            return sae.decode(enc.top_acts, enc.top_indices)

    return step, recon


def setup_saelens(args, first):
    from sae_lens.saes.sae import TrainStepInput
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    torch.manual_seed(0)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=args.d_in, d_sae=args.latents, k=args.k,
                                                aux_loss_coefficient=args.auxk_alpha))
    with torch.no_grad():
        sae.b_dec.copy_(first.mean(0))
    opt = torch.optim.Adam(sae.parameters(), lr=args.lr)
    since_fired = torch.zeros(args.latents, dtype=torch.long)
    coeffs = {k: (v.value if hasattr(v, "value") else v) for k, v in sae.get_coefficients().items()}

    def step(x):
        # what SAELens' SAETrainer._train_step does per batch: forward, firing stats, clip, Adam
        out = sae.training_forward_pass(TrainStepInput(x, coeffs, since_fired >= args.dead_tokens, 0, False))
        with torch.no_grad():
            fired = (out.feature_acts > 0).float().sum(-2) > 0
            since_fired.add_(x.shape[0])
            since_fired[fired] = 0
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        opt.step()

    def recon(x):
        with torch.no_grad():
            return sae.decode(sae.encode(x))

    return step, recon


def run_one(args) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    acts = make_acts(args.batch * (args.steps + args.warmup_steps + 1), args.d_in)
    held_out = acts[-args.batch :]
    setups = {"mmsae": setup_mmsae, "sparsify": setup_sparsify, "saelens": setup_saelens,
              # exact: the dense selection product in fp32 too
              "mmsae_fp32": lambda a, f: setup_mmsae(a, f, selection_dtype="float32")}
    step, recon = setups[args.only](args, acts[: args.batch])
    t0 = None
    for i in range(args.steps + args.warmup_steps):
        if i == args.warmup_steps:
            t0 = time.perf_counter()
        step(acts[i * args.batch : (i + 1) * args.batch])
    elapsed = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"impl": args.only, "tokens_per_s": args.steps * args.batch / elapsed, "fvu": fvu64(held_out, recon(held_out)),
           "peak_rss_mib": peak_mib, "steps_timed": args.steps}
    if hasattr(recon, "selection_dtype"):
        out["selection_dtype"] = recon.selection_dtype
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d-in", type=int, default=512)
    ap.add_argument("--latents", type=int, default=8192)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=30, help="timed steps")
    ap.add_argument("--warmup-steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-4 / (8192 / 2**14) ** 0.5)
    ap.add_argument("--auxk-alpha", type=float, default=1 / 32)
    ap.add_argument("--dead-tokens", type=int, default=10_000_000)
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument("--repeats", type=int, default=1,
                    help="run the implementations this many times, round robin, and keep each one's fastest run "
                         "(robust to other load on a shared machine)")
    ap.add_argument("--only", choices=IMPLS, help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    if args.only:
        print(json.dumps(run_one(args)))
        return
    torch.set_num_threads(args.threads)
    results = {}
    passthrough = [a for a in sys.argv[1:] if a not in ("--json",)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    for _ in range(args.repeats):
        for impl in args.impls.split(","):
            if "error" in results.get(impl, {}):
                continue
            res = subprocess.run([sys.executable, __file__, *passthrough, "--only", impl], capture_output=True, text=True, env=env)
            if res.returncode != 0:
                results[impl] = {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"}
                continue
            run = json.loads(res.stdout.strip().splitlines()[-1])
            runs = results.get(impl, {}).get("tokens_per_s_runs", []) + [run["tokens_per_s"]]
            if run["tokens_per_s"] >= results.get(impl, {}).get("tokens_per_s", 0.0):
                results[impl] = run
            results[impl]["tokens_per_s_runs"] = runs
    fp32 = gemm_gflops(args.batch, args.d_in, args.latents, torch.float32)
    bf16 = gemm_gflops(args.batch, args.d_in, args.latents, torch.bfloat16)
    flop_per_token = 2 * args.d_in * args.latents  # the one dense product of a step
    bounds = {"encoder_gemm_gflops_fp32": fp32, "encoder_gemm_gflops_bf16": bf16,
              "bound_tokens_per_s_fp32": fp32 * 1e9 / flop_per_token, "bound_tokens_per_s_bf16": bf16 * 1e9 / flop_per_token}
    for r in results.values():
        if "tokens_per_s" in r:
            r["fraction_of_fp32_bound"] = r["tokens_per_s"] / bounds["bound_tokens_per_s_fp32"]
            r["fraction_of_bf16_bound"] = r["tokens_per_s"] / bounds["bound_tokens_per_s_bf16"]
    ratio = None
    if "tokens_per_s" in results.get("mmsae", {}) and "tokens_per_s" in results.get("sparsify", {}):
        ratio = results["mmsae"]["tokens_per_s"] / results["sparsify"]["tokens_per_s"]
    report = {"config": {k: v for k, v in vars(args).items() if k not in ("only", "json")}, "torch": torch.__version__,
              "results": results, "ceilings": bounds, "ratio_mmsae_over_sparsify": ratio}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for impl, r in results.items():
            print(f"{impl:>9}: " + (f"{r['tokens_per_s']:9.0f} tokens/s  FVU {r['fvu']:.4f}  peak {r['peak_rss_mib']:.0f} MiB" if "tokens_per_s" in r else r["error"]))
        print(f"ratio mmsae/sparsify: {ratio}")


if __name__ == "__main__":
    main()
