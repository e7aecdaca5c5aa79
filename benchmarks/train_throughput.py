"""TopK SAE training throughput: mmsae vs eai-sparsify vs sae-lens on the same activations.

Run with a Python that has the peers installed and mmsae on the path, e.g.

    OMP_NUM_THREADS=2 PYTHONPATH=src /work/peers-venv/bin/python benchmarks/train_throughput.py --json
    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/train_throughput.py --profile mmsae --steps 5   # where a step goes

Each implementation runs in its own subprocess (so peak RSS is its own) on identical synthetic
activations: sparse non-negative combinations of random unit directions plus an offset and noise,
so that FVU is meaningful. Every implementation trains with fp32 Adam, the same lr, the same
batch, AuxK where it has it, gradient clipping where its own trainer clips. Tokens/s is measured
over the steps after `--warmup-steps` (with `--repeats N`, the best of N round-robin runs); FVU
(mean-centred, float64) on a held-out batch at the end.
The script also measures the encoder-shaped product in the precision each row's selection runs in:
a step runs that product once plus everything else, so it bounds the step. `train.bound` names the
mmsae row's (fp32_gemm, bf16_gemm or int8_gemm), `train.fraction_of_bound` is its tokens/s over that
bound (<= 1 up to timing noise); the float32 rows (mmsae_fp32, sparsify, sae-lens) get
`train.fraction_of_fp32_bound.<impl>`. No other bound is reported: a bf16 product emulated on a CPU
without native bf16 bounds nothing that runs.

Rows: `mmsae` is mmsae's default configuration (selection_dtype="auto": the dense selection product in
bf16 where the CPU multiplies bf16 natively, else int8 where a startup probe finds it faster, else fp32;
exact fp32 values deciding among its candidates) or the path `--selection` forces (so one machine can
measure another CPU's path); `train.selection_precision` says which ran, `train.selection_reason` why.
`mmsae_fp32` is the exact fp32 product. Output: flat `train.*` keys (`--json`).
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


def gemm_gflops(b: int, d: int, f: int, precision: str, reps: int = 7) -> float:
    """The encoder-shaped product's rate in `precision` (float32 | bfloat16 | int8, int8 through
    torch._int_mm: the bare product, without int8 selection's quantisation), from its fastest
    repetition (the least disturbed), into a preallocated output as mmsae's steps and index write it
    (a fresh [b, f] output is page-faulted in on every call, which would understate the rate and so
    the bound)."""
    g = torch.Generator().manual_seed(0)
    if precision == "int8":
        a = torch.randint(-127, 128, (b, d), dtype=torch.int8, generator=g)
        w = torch.randint(-127, 128, (f, d), dtype=torch.int8, generator=g)
        out = torch.empty(b, f, dtype=torch.int32)

        def product():
            return torch._int_mm(a, w.T, out=out)
    else:
        dtype = getattr(torch, precision)
        a, w = torch.randn(b, d, generator=g).to(dtype), torch.randn(f, d, generator=g).to(dtype)
        out = torch.empty(b, f, dtype=dtype)

        def product():
            return torch.mm(a, w.T, out=out)
    product()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        product()
        best = min(best, time.perf_counter() - t)
    return 2 * b * d * f / best / 1e9


# -- one implementation per function: returns (step_fn, reconstruct_fn) -------------------------
def setup_mmsae(args, first, selection_dtype="auto"):
    """mmsae's real training step (Trainer._train_step: AuxK, dead-latent clock, clipping, Adam).

    "auto" is mmsae's default configuration (the trainer's own choice of selection precision; the
    k values and all gradients in fp32); "float32", "bfloat16", "int8" force a path."""
    from mmsae.train import TensorBatches, TrainConfig, Trainer

    cfg = TrainConfig(kind="topk", n_latents=args.latents, k=args.k, steps=args.steps + args.warmup_steps, lr=args.lr,
                      warmup_steps=1, decay_fraction=0.0, normalize=False, checkpoint_every=10**9, log_every=10**9,
                      dead_tokens=args.dead_tokens, auxk_alpha=args.auxk_alpha, selection_dtype=selection_dtype)
    trainer = Trainer(cfg, TensorBatches(first, first.shape[0]), tempfile.mkdtemp(prefix="mmsae-bench-"))
    trainer._initialise(first)

    def recon(x):
        with torch.no_grad():
            return trainer.sae.decode(trainer.sae.encode(x))

    recon.selection = dict(trainer.selection, sae=trainer.sae)
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


SETUPS = {"mmsae": lambda a, f: setup_mmsae(a, f, selection_dtype=a.selection),
          "sparsify": setup_sparsify, "saelens": setup_saelens,
          # exact: the dense selection product in fp32 too
          "mmsae_fp32": lambda a, f: setup_mmsae(a, f, selection_dtype="float32")}


def run_one(args) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    acts = make_acts(args.batch * (args.steps + args.warmup_steps + 1), args.d_in)
    held_out = acts[-args.batch :]
    step, recon = SETUPS[args.only](args, acts[: args.batch])
    t0 = None
    for i in range(args.steps + args.warmup_steps):
        if i == args.warmup_steps:
            t0 = time.perf_counter()
        step(acts[i * args.batch : (i + 1) * args.batch])
    elapsed = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"impl": args.only, "tokens_per_s": args.steps * args.batch / elapsed, "fvu": fvu64(held_out, recon(held_out)),
           "peak_rss_mib": peak_mib, "steps_timed": args.steps}
    if hasattr(recon, "selection"):  # what the trainer chose (or was told), and why
        sel = recon.selection
        out.update(selection_dtype=sel["dtype"], selection_reason=sel["reason"])
        if "int8_speedup" in sel:
            out["int8_speedup"] = sel["int8_speedup"]
        stats = sel["sae"].selection_stats
        if stats:
            out["int8_fallback_fraction"] = stats["fallback_rows"] / stats["rows"]
    return out


def profile_one(args) -> None:
    """--profile IMPL: where one training step's time goes (torch profiler over the timed steps; self time per
    step of each operator and input shape, the 25 largest)."""
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batches = make_acts(args.batch * (args.steps + args.warmup_steps), args.d_in).split(args.batch)
    step, _ = SETUPS[args.profile](args, batches[0])
    for b in batches[: args.warmup_steps]:
        step(b)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for b in batches[args.warmup_steps :]:
            step(b)
    n = len(batches) - args.warmup_steps
    rows = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in rows) / 1e3 / n
    print(f"{args.profile}: {total:.1f} ms of operator self time per step ({n} steps, {args.threads} threads)")
    for e in rows[:25]:
        print(f"{e.self_cpu_time_total / 1e3 / n:8.2f} ms  {e.count // n:3d}/step  {e.key:30s} {e.input_shapes}")


SELECTIONS = {"auto": "auto", "fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16",
              "int8": "int8"}
# the product a step cannot beat, by the precision the selection product runs in
BOUND_OF = {"float32": "fp32_gemm", "bfloat16": "bf16_gemm", "int8": "int8_gemm"}


def bound_tokens_per_s(args, precision: str) -> tuple[float, float]:
    """(GFLOP/s, tokens/s) of the encoder-shaped product in `precision`: a step runs it once, plus
    everything else, so a step's tokens/s is at most this (up to timing noise)."""
    gflops = gemm_gflops(args.batch, args.d_in, args.latents, precision)
    return gflops, gflops * 1e9 / (2 * args.d_in * args.latents)


def flat_report(args, results: dict) -> dict:
    """Flat `train.*` keys. The bound is the one of the path each row took: the mmsae row's selection
    precision for `train.bound`; the float32 product for the rows that select in float32."""
    out = {"train.config." + k: v for k, v in vars(args).items() if k not in ("only", "json", "profile")}
    out["train.torch"] = torch.__version__
    for impl, r in results.items():
        if "error" in r:
            out[f"train.error.{impl}"] = r["error"]
            continue
        for key in ("tokens_per_s", "fvu", "peak_rss_mib"):
            out[f"train.{key}.{impl}"] = r[key]
        out[f"train.tokens_per_s_runs.{impl}"] = r["tokens_per_s_runs"]
    mm = results.get("mmsae", {})
    if "tokens_per_s" in mm:
        precision = mm["selection_dtype"]
        out["train.selection_precision"] = precision
        out["train.selection_reason"] = mm["selection_reason"]
        if "int8_speedup" in mm:
            out["train.selection_int8_probe_speedup"] = mm["int8_speedup"]
        if "int8_fallback_fraction" in mm:
            out["train.selection_int8_fallback_fraction"] = mm["int8_fallback_fraction"]
        gflops, bound = bound_tokens_per_s(args, precision)
        out.update({"train.bound": BOUND_OF[precision], "train.bound_gflops": gflops,
                    "train.bound_tokens_per_s": bound, "train.fraction_of_bound": mm["tokens_per_s"] / bound})
    fp32_rows = [i for i, r in results.items() if "tokens_per_s" in r and i != "mmsae"]
    if fp32_rows:  # sparsify, sae-lens and mmsae_fp32 all run their encoder product in float32
        gflops, bound = bound_tokens_per_s(args, "float32")
        out["train.fp32_bound_tokens_per_s"] = bound
        for impl in fp32_rows:
            out[f"train.fraction_of_fp32_bound.{impl}"] = results[impl]["tokens_per_s"] / bound
    for peer in ("sparsify", "saelens"):
        if "tokens_per_s" in mm and "tokens_per_s" in results.get(peer, {}):
            out[f"train.ratio_to_{peer}"] = mm["tokens_per_s"] / results[peer]["tokens_per_s"]
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
    ap.add_argument("--selection", default="auto", choices=sorted(SELECTIONS),
                    help="the mmsae row's selection product: auto (mmsae's default choice on this machine) or "
                         "forced, to measure another CPU's path here (bf16 where it is emulated, int8, fp32)")
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument("--repeats", type=int, default=1,
                    help="run the implementations this many times, round robin, and keep each one's fastest run "
                         "(robust to other load on a shared machine)")
    ap.add_argument("--only", choices=IMPLS, help=argparse.SUPPRESS)
    ap.add_argument("--profile", choices=IMPLS, help="print where this implementation's step spends its time, and stop")
    ap.add_argument("--json", action="store_true", help="print one JSON object of flat train.* keys")
    args = ap.parse_args()
    args.selection = SELECTIONS[args.selection]
    unknown = set(args.impls.split(",")) - set(IMPLS)
    if unknown:
        raise SystemExit(f"--impls: unknown {sorted(unknown)}; valid: {', '.join(IMPLS)}")
    if args.only:
        print(json.dumps(run_one(args)))
        return
    if args.profile:
        profile_one(args)
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
    report = flat_report(args, results)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for impl, r in results.items():
        print(f"{impl:>10}: " + (f"{r['tokens_per_s']:9.0f} tokens/s  FVU {r['fvu']:.4f}  peak {r['peak_rss_mib']:.0f} MiB"
                                 if "tokens_per_s" in r else r["error"]))
    for key in ("train.selection_precision", "train.bound", "train.bound_tokens_per_s", "train.fraction_of_bound",
                "train.ratio_to_sparsify"):
        print(f"{key}: {report.get(key)}")


if __name__ == "__main__":
    main()
