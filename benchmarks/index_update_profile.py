"""Where the index's update time goes, per token, on its own (no forward running beside it).

    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/index_update_profile.py [--records 512] [--json]

Captures the zoo subject's block-3 activations for `records` world records once, then times, over the same
batches and a random TopK SAE (2^14 latents, k 32, the selection `build_index` would choose):
  - capture:    the capture loop itself (rendering, processor, forward to block 3), for scale
  - product:    encode_exact's selection product (bias folded in, into its kept buffer)
  - candidates: the top k + margin candidate search over that product (`topk_candidates`)
  - encode:     the whole `encode_exact` (product, candidates, exact values, the k best)
  - add_batch:  the whole update of the running state (encode + statistics + top-N images and texts)
Each is the best of `--repeats` passes, in µs per token; `--json` prints flat `profile.*` keys.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    from mmsae.data import open_source
    from mmsae.index.state import IndexState, use_selection
    from mmsae.models import load_adapter
    from mmsae.sae import SAE, SAEConfig
    from mmsae.sae.kernels import topk_candidates
    from mmsae.store.stream import capture_batches
    from mmsae.zoo import model_dir

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=512)
    ap.add_argument("--latents", type=int, default=1 << 14)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    torch.set_grad_enabled(False)  # inference only, as in build_index
    torch.manual_seed(0)
    sae = SAE.from_config(SAEConfig(kind="topk", d_in=128, n_latents=args.latents, k=args.k, hook_layer=3)).eval()
    chosen = use_selection(sae, "auto", torch.device("cpu"))
    adapter = load_adapter(str(model_dir("subject")), device="cpu")
    source = open_source(f"world:n={args.records},seed=0", prompt="<s> user : <image> {caption}")

    def capture():
        return [caps for _, caps in capture_batches(adapter, source, range(args.records), 3, 32, lambda *a: None)]

    batches = capture()
    acts = [torch.cat([c.acts_SD for c in caps]) for caps in batches]
    n_tokens = sum(len(a) for a in acts)
    margin = max(8, args.k // 4)
    dtype = sae.selection_dtype or torch.float32

    def product():
        for a in acts:
            sae._inference_product(sae.sae_input(a), dtype)

    pre = [sae._inference_product(sae.sae_input(a), dtype).clone() for a in acts] if dtype != torch.int8 else []

    def candidates():
        for p in pre:
            topk_candidates(p, args.k + margin)

    def encode():
        for a in acts:
            sae.encode_exact(a)

    def add_batch():
        state = IndexState(args.latents, 20, 20, "max", (8, 4), "cpu")
        for caps in batches:
            state.add_batch(caps, sae, 4096)

    parts = {"capture": capture, "product": product, "candidates": candidates, "encode": encode,
             "add_batch": add_batch}
    if dtype == torch.int8:  # int8's product and candidates live inside encode_exact only
        parts.pop("product"), parts.pop("candidates")
    out = {"selection_dtype": str(dtype).replace("torch.", ""), "selection_reason": chosen["reason"],
           "tokens": n_tokens, "threads": torch.get_num_threads()}
    for name, fn in parts.items():
        best = float("inf")
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        out[f"{name}_us_per_token"] = best * 1e6 / n_tokens
    if args.json:
        print(json.dumps({f"profile.{k}": v for k, v in out.items()}, indent=1))
        return
    print(f"{n_tokens:,} tokens, {out['selection_dtype']} selection ({out['selection_reason']}), "
          f"{out['threads']} threads; µs per token:")
    for name in parts:
        print(f"  {name:11s} {out[f'{name}_us_per_token']:7.1f}")


if __name__ == "__main__":
    main()
