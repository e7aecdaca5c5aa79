"""A tiny training run used by the subprocess tests (kill -9 resume, torchrun DDP).

    python train_script.py OUT_DIR [--sleep S] [--steps N] [--batch B]
"""

import argparse
import time

import torch

from mmsae.train import TensorBatches, TrainConfig, train


def synthetic_acts(n=2048, d=16, f=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(f, d, generator=g)
    z = (torch.rand(n, f, generator=g) < 0.08).float() * torch.rand(n, f, generator=g) * 3
    return z @ W + 2.0


class SlowBatches(TensorBatches):
    """Sleeps before each batch so a test can kill the run mid-way."""

    def __init__(self, *a, sleep=0.0, **k):
        super().__init__(*a, **k)
        self.sleep = sleep

    def __iter__(self):
        for b in super().__iter__():
            time.sleep(self.sleep)
            yield b


def assert_same_run(ref, out) -> None:
    """Two training runs ended with bitwise-equal SAE weights and the same metrics history."""
    from safetensors.torch import load_file

    a = load_file(str(ref / "sae" / "sae.safetensors"))
    b = load_file(str(out / "sae" / "sae.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert (out / "metrics.jsonl").read_text() == (ref / "metrics.jsonl").read_text()


def config(steps: int) -> TrainConfig:
    return TrainConfig(kind="topk", n_latents=64, k=4, steps=steps, lr=2e-3, warmup_steps=5, checkpoint_every=5,
                       log_every=5, dead_tokens=500, seed=3, plots=False)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(1)
    train(config(args.steps), SlowBatches(synthetic_acts(), args.batch, seed=1, sleep=args.sleep), args.out)
    print("finished")
