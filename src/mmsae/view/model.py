"""The model side of the viewer: the model and SAE loaded once, on first use, and a bounded job queue.

At most `max_jobs` model jobs run at once and at most `max_queue` wait; a request beyond that is told the
viewer is busy (503) instead of piling up memory."""

from __future__ import annotations

import asyncio
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np


class Busy(RuntimeError):
    """Too many model jobs are waiting."""


class ModelUnavailable(RuntimeError):
    """No model or SAE to run (the message says which and how to give it)."""


class JobGate:
    def __init__(self, max_jobs: int, max_queue: int):
        self.max_jobs, self.max_queue = max_jobs, max_queue
        self._sem: asyncio.Semaphore | None = None
        self.waiting = 0

    async def run(self, fn, *args):
        import anyio.to_thread

        if self._sem is None:  # created inside the running loop
            self._sem = asyncio.Semaphore(self.max_jobs)
        if self.waiting >= self.max_jobs + self.max_queue:
            raise Busy(f"the viewer is busy: {self.waiting} model jobs are running or waiting; try again shortly")
        self.waiting += 1
        try:
            async with self._sem:
                return await anyio.to_thread.run_sync(fn, *args)
        finally:
            self.waiting -= 1


class ModelRunner:
    """Runs the indexed model and SAE on one prompt and says which features fire on each token."""

    def __init__(self, model: str | None, sae: str | None, layer: int | None, device: str | None = None,
                 top_k: int = 8):
        self.model_path, self.sae_path, self.layer, self.device = model, sae, layer, device
        self.top_k = top_k
        self._lock = threading.Lock()
        self._adapter = self._sae = None

    def available(self) -> str | None:
        """None when the model can run, else why not."""
        for name, path in (("model", self.model_path), ("SAE", self.sae_path)):
            if not path:
                return f"no {name}: start the viewer with --{name.lower()} PATH (or build the index with one)"
            if not Path(path).exists():
                return f"the {name} at {path} does not exist"
        if self.layer is None:
            return "the index meta has no layer"
        return None

    def _load(self):
        from ..models import load_adapter
        from ..sae import SAE
        from ..util import pick_device

        why = self.available()
        if why:
            raise ModelUnavailable(why)
        if self._adapter is None:
            device = self.device or pick_device()
            self._sae = SAE.from_pretrained(str(self.sae_path), device=device).eval()
            self._adapter = load_adapter(str(self.model_path), device=device)
        return self._adapter, self._sae

    @contextmanager
    def loaded(self):
        """(adapter, sae), loaded on first use, held under the model lock: one job on the model at a time."""
        with self._lock:
            yield self._load()

    def analyze(self, image, prompt: str) -> dict:
        """Tokens of `prompt` with the image: text, modality, pixel box and the top features on each."""
        import torch

        from ..models import Prompt
        from ..models.table import IMAGE, SPECIAL

        with self._lock:  # one forward at a time on the shared model
            adapter, sae = self._load()
            enc = adapter.encode([Prompt([image], prompt if "<image>" in prompt else "<image>" + prompt)])
            acts_SD = adapter.capture(enc.inputs, int(self.layer))[0]
            with torch.no_grad():
                codes = sae.encode(acts_SD.to(next(sae.parameters()).device, torch.float32))
            vals_SK, idx_SK = _top(codes, self.top_k)
            table = enc.tables[0]
            pieces = adapter.tokenizer.convert_ids_to_tokens([int(t) for t in table.token_id])
        tokens = []
        for s in range(len(table)):
            box = table.box[s]
            modality = int(table.modality[s])
            keep = vals_SK[s] > 0
            tokens.append({
                "i": s, "text": str(pieces[s]), "modality": "image" if modality == IMAGE else
                "special" if modality == SPECIAL else "text",
                "box": [float(v) for v in box] if modality == IMAGE and np.all(np.isfinite(box)) else None,
                "features": [[int(f), round(float(v), 4)] for f, v in zip(idx_SK[s][keep], vals_SK[s][keep])],
            })
        return {"width": image.width, "height": image.height, "layer": int(self.layer), "tokens": tokens}


def _top(codes, k: int):
    """The k strongest latents of every position: (values_SK, indices_SK) as numpy, strongest first."""
    import torch

    if codes.indices is None:
        dense = codes.values.float()
    else:
        dense = torch.zeros(codes.values.shape[0], codes.n_latents, device=codes.values.device)
        dense.scatter_(1, codes.indices.long(), codes.values.float())
    top = dense.topk(min(k, dense.shape[1]), dim=1)
    return top.values.cpu().numpy(), top.indices.cpu().numpy()


class Neighbours:
    """Features whose decoder directions are closest (cosine) to a feature's, from the SAE's W_dec."""

    def __init__(self, sae: str | None):
        self.path = sae
        self._unit_FD = None
        self._lock = threading.Lock()

    def of(self, feature: int, n: int = 10) -> list[tuple[int, float]] | None:
        if not self.path or not Path(self.path).exists():
            return None
        import torch

        from ..sae import SAE

        with self._lock:
            if self._unit_FD is None:
                W = SAE.from_pretrained(str(self.path), device="cpu").W_dec.detach().float()
                self._unit_FD = W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)
        if not 0 <= feature < len(self._unit_FD):
            return []
        with torch.no_grad():
            cos_F = self._unit_FD @ self._unit_FD[feature]
            cos_F[feature] = -2.0
            top = cos_F.topk(min(n, len(cos_F) - 1))
        return [(int(i), float(v)) for i, v in zip(top.indices, top.values)]
