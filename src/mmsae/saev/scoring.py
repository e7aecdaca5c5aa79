"""Record and patch scores from an SAE's codes (SAE-V's data filtering, Algorithm 1 and its ablations).

Only text and image tokens count: special tokens (BOS, chat-template markers, image newlines) and batch
padding are excluded, unlike the paper's code, which counted BOS and template tokens as text and averaged
padding into L0. Scores are keyed by the record's id, never by a hash of its text.

    l0       mean over the record's text+image tokens of the number of active latents (value > 0); refused for
             a TopK SAE, whose every token has exactly k
    cooccur  number of latents whose activation exceeds `threshold` on >= 1 text and >= 1 image token
    cosine   sum of the cross-modal weights of those co-occurring latents (null weights count 0)
    clip     100 x max(0, cos) between CLIP embeddings of the record's image(s) (mean) and its text
    random   uniform [0, 1) from (seed, record id): the same record gets the same score in any order
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mmsae.models.table import IMAGE, TEXT

METHODS = ("l0", "cooccur", "cosine", "clip", "random")
PATCH_METHODS = ("l0", "l1", "cosine")
EXCLUDED = "special tokens (BOS, chat-template and structure tokens, image newlines) and padding are excluded"
NEEDS_TEXT_AND_IMAGE = ("cooccur", "cosine", "clip")
Rejector = Callable[[int, str, str], None]


@dataclass
class Coded:
    """One captured record's text and image tokens with their SAE codes."""

    index: int
    id: str
    record: object  # mmsae.data.Record
    table: object  # TokenTable of the kept (text and image) tokens
    acts_TD: torch.Tensor
    codes_TF: torch.Tensor  # dense codes, float32


class ListSource:
    """A list of records as a source (so that scoring shares capture_batches' batching and rejects)."""

    def __init__(self, records: Sequence):
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def record(self, i: int):
        return self.records[i]


def sae_layer(sae, layer: int | None = None) -> int:
    hook = sae.cfg.hook_layer
    if layer is None and hook is None:
        raise ValueError("the SAE records no hook layer; pass the layer it was trained on")
    if layer is not None and hook is not None and layer != hook:
        raise ValueError(f"layer {layer} was requested but the SAE was trained on layer {hook}")
    return int(hook if layer is None else layer)


def text_of(record) -> str:
    return record.text.replace("<image>", " ").strip()


@torch.no_grad()
def coded_records(adapter, sae, source, indices, layer: int, reject: Rejector, batch_size: int = 8,
                  max_seq_len: int | None = None) -> Iterator[tuple[list[int], list[Coded]]]:
    """(consumed indices, coded records) per batch, as capture_batches yields them."""
    from mmsae.store.stream import capture_batches

    dev = next(sae.parameters()).device
    for consumed, captured in capture_batches(adapter, source, indices, layer, batch_size, reject, max_seq_len):
        out = []
        for c in captured:
            keep = np.flatnonzero((c.table.modality == TEXT) | (c.table.modality == IMAGE))
            acts_TD = c.acts_SD[torch.as_tensor(keep, device=c.acts_SD.device)].to(dev, torch.float32)
            codes_TF = sae.encode(acts_TD).to_dense().float() if len(keep) else acts_TD.new_zeros(0, sae.cfg.n_latents)
            out.append(Coded(c.index, c.id, c.record, c.table.take(keep), acts_TD, codes_TF))
        yield consumed, out


def record_problem(record, method: str) -> str | None:
    """Why a record cannot be scored by `method` (None when it can)."""
    if method in NEEDS_TEXT_AND_IMAGE:
        if not record.images:
            return f"method {method} needs an image; the record has none"
        if not text_of(record):
            return f"method {method} needs text; the record's text is empty"
    return None


def random_score(record_id: str, seed: int) -> float:
    """Uniform [0, 1) from (seed, id): independent of order, batching and resume."""
    digest = hashlib.sha256(f"{seed}\0{record_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2.0**64


def score_coded(c: Coded, method: str, weights_F: np.ndarray | None, threshold: float) -> float:
    """The score of one coded record by an SAE method (l0, cooccur, cosine)."""
    mod = c.table.modality
    if method == "l0":
        return float((c.codes_TF > 0).sum(1).float().mean()) if len(mod) else 0.0
    on_F = lambda m: (c.codes_TF[torch.as_tensor(mod == m, device=c.codes_TF.device)] > threshold).any(0)  # noqa: E731
    both_F = (on_F(TEXT) & on_F(IMAGE)).cpu().numpy()
    if method == "cooccur":
        return float(both_F.sum())
    if method == "cosine":
        return float(np.nansum(weights_F[both_F]))
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def check_method(method: str, crossmodal) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "cosine" and crossmodal is None:
        raise ValueError("method cosine needs the cross-modal weights of the SAE's features; compute them with "
                         "`mmsae crossmodal --index DIR` on an index of this SAE and pass that index")


def weights_array(crossmodal, n_latents: int) -> np.ndarray | None:
    """Cross-modal weights as float64 [F] (NaN where null) from an array or a {feature: weight} dict."""
    if crossmodal is None:
        return None
    if isinstance(crossmodal, dict):
        w = np.full(n_latents, np.nan)
        for f, v in crossmodal.items():
            w[int(f)] = np.nan if v is None else float(v)
        return w
    w = np.asarray(crossmodal, np.float64)
    if w.shape != (n_latents,):
        raise ValueError(f"crossmodal weights have shape {w.shape}; the SAE has {n_latents} latents")
    return w


def score_records(adapter, sae, records, method, *, crossmodal=None, threshold=1.0, seed: int = 0,
                  clip=None, batch_size: int = 8, rejects: list | None = None) -> dict[str, float]:
    """id -> score of each record (mmsae.data.Record) by `method` (see the module docstring).

    `crossmodal`: weights [F] (NaN = null) or {feature: weight} for cosine; `clip`: a ClipScorer or a
    CLIP checkpoint path for clip (default the zoo's). A record that cannot be scored is left out of the
    result and, when `rejects` is a list, appended to it as {"id", "reason"}."""
    check_method(method, crossmodal)
    out: dict[str, float] = {}

    def reject(i: int, rid: str, reason: str) -> None:
        if rejects is not None:
            rejects.append({"index": i, "id": rid, "reason": reason})

    scorer = ScoreBatch(adapter, sae, method, crossmodal=crossmodal, threshold=threshold, seed=seed, clip=clip,
                        batch_size=batch_size)
    for _, rows in scorer.batches(ListSource(records), range(len(records)), reject):
        out.update({rid: s for _, rid, s in rows})
    return out


class ScoreBatch:
    """The scoring loop shared by score_records and `mmsae filter score`."""

    def __init__(self, adapter, sae, method: str, *, crossmodal=None, threshold: float = 1.0, seed: int = 0,
                 clip=None, batch_size: int = 8, layer: int | None = None, max_seq_len: int | None = None):
        check_method(method, crossmodal)
        if method == "l0" and getattr(sae.cfg, "kind", None) == "topk":
            # every token of a TopK SAE has exactly k active latents: l0 would rank every record alike
            raise ValueError(f"method l0 on a TopK SAE scores every record {sae.cfg.k} (each token has exactly k "
                             "active latents); use an SAE with a variable L0 (relu, jumprelu, batchtopk) or the "
                             "method cooccur")
        self.adapter, self.sae, self.method = adapter, sae, method
        self.weights_F = weights_array(crossmodal, sae.cfg.n_latents)
        self.threshold, self.seed, self.batch_size, self.max_seq_len = threshold, seed, batch_size, max_seq_len
        self.layer = sae_layer(sae, layer) if method in ("l0", "cooccur", "cosine") else None
        self.clip = None
        if method == "clip":
            if clip is None or isinstance(clip, (str, bytes)) or hasattr(clip, "__fspath__"):
                from mmsae.defaults import zoo_model_dir
                from mmsae.score.clip_score import ClipScorer

                clip = ClipScorer(clip or zoo_model_dir("clip"), device=str(next(sae.parameters()).device))
            self.clip = clip

    def batches(self, source, indices, reject: Rejector) -> Iterator[tuple[list[int], list[tuple[int, str, float]]]]:
        """(consumed indices, [(index, id, score)]) per batch; every index is consumed exactly once."""
        if self.method in ("clip", "random"):
            batch: list[int] = []
            for i in indices:
                batch.append(i)
                if len(batch) == self.batch_size:
                    yield batch, self._plain(source, batch, reject)
                    batch = []
            if batch:
                yield batch, self._plain(source, batch, reject)
            return

        checked = _Checked(source, self.method)
        for consumed, coded in coded_records(self.adapter, self.sae, checked, indices, self.layer, reject,
                                             self.batch_size, self.max_seq_len):
            yield consumed, [(c.index, c.id, score_coded(c, self.method, self.weights_F, self.threshold))
                             for c in coded]

    def _plain(self, source, batch: list[int], reject: Rejector) -> list[tuple[int, str, float]]:
        from mmsae.store.stream import load

        out = []
        for i in batch:
            rec = load(source, i, reject)
            if rec is None:
                continue
            problem = record_problem(rec, self.method)
            if problem:
                reject(i, rec.id, problem)
                continue
            if self.method == "random":
                out.append((i, rec.id, random_score(rec.id, self.seed)))
            else:
                img_ND = self.clip.image_embeddings(rec.images).mean(0, keepdim=True)
                img_ND = torch.nn.functional.normalize(img_ND, dim=-1)
                out.append((i, rec.id, self.clip.score(text_of(rec), rec.images, img_ND=img_ND)))
        return out


class _Checked:
    """A source whose records failing the method's needs raise Reject (so capture_batches rejects them)."""

    def __init__(self, source, method: str):
        self.source, self.method = source, method

    def __len__(self) -> int:
        return len(self.source)

    def record(self, i: int):
        from mmsae.data import Reject

        rec = self.source.record(i)
        problem = record_problem(rec, self.method)
        if problem:
            raise Reject(rec.id, problem)
        return rec
