"""Supervised fine-tuning of any HF LMM on chat records, and the SAE-V data-filtering experiment's parts.

    from mmsae.finetune import FinetuneConfig, run_finetune
    run_finetune(FinetuneConfig(data="jsonl:train.jsonl", out="ft", model="path/to/lmm", steps=200))

`loop.train_loop` is the one optimisation loop (the zoo trains with it too); `chat` turns records into
masked token batches; `corrupt` builds the corrupted world instruction set; `ifd` scores records by IFD.

May import (the layers of pyproject.toml's importlinter contract): explain, score, llm, index, train, evals,
sae, store, models, data, world, viz, io, util, defaults; not its siblings steer, attribute, saev.
"""

from .config import FinetuneConfig


def run_finetune(cfg: FinetuneConfig) -> dict:
    from .run import run_finetune as run

    return run(cfg)


__all__ = ["FinetuneConfig", "run_finetune"]
