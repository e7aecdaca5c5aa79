"""`mmsae crossmodal`: each feature's cross-modal weight (SAE-V), as the paper's code computes it.

Over the index's data (or `max_records` of it): the top-K (30) tokens by the feature's activation; when at
least `min_modality` (5) of them are text tokens and as many are image tokens, the weight is the mean of
the pairs x pairs (5 x 5) cosine similarities between the raw layer activations (not SAE codes) of the
top text and top image tokens; otherwise it is null. Special tokens and padding are not candidates.

Streaming in bounded memory: per feature and modality a running top-K of activations (for the counts)
and a running top-`pairs` with the activation vectors (F x 2 x pairs x D floats). Because pairs <=
min_modality, the top-`pairs` tokens of a modality that has >= min_modality tokens in the overall top-K
are its top-`pairs` overall, so nothing else needs keeping. Resumable: state saved atomically every
`chunk_records` records with the next record; a killed run restarts there with the same batches.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

STATE_DIR = "crossmodal-state"
REJECTS_FILE = "crossmodal-rejects.jsonl"
PARQUET_FILE = "crossmodal.parquet"


@dataclass
class CrossmodalConfig:
    index: str
    """feature index directory (mmsae index); its meta names the model, SAE, data and prompt"""
    k: int = 30
    """top tokens per feature by activation (the paper's code: 30)"""
    min_modality: int = 5
    """text and image tokens each needed among the top k for a weight (else null)"""
    pairs: int = 5
    """top text and top image tokens whose pairs x pairs cosines are averaged (<= min_modality)"""
    data: str | None = None
    """data spec instead of the index's (e.g. the same data moved); None: the index's"""
    max_records: int | None = None
    """records of the data to use (None: as many as the index read)"""
    batch_size: int = 8
    """sequences per forward pass"""
    chunk_records: int = 128
    """records between two saves of the running state (the unit of resume)"""
    parquet: str | None = None
    """also export feature, weight, n_text, n_image here (None: <index>/crossmodal.parquet)"""
    device: str = "auto"
    """auto: cuda when available, else cpu"""
    progress: bool = True
    """show a progress bar"""

    def __post_init__(self):
        for name in ("k", "min_modality", "pairs", "batch_size", "chunk_records"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.pairs > self.min_modality:
            raise ValueError(f"pairs must be <= min_modality ({self.min_modality}), got {self.pairs!r}")
        if 2 * self.min_modality > self.k:
            raise ValueError(f"min_modality must be <= k / 2 ({self.k // 2}), got {self.min_modality!r}")
        if self.max_records is not None and self.max_records < 1:
            raise ValueError(f"max_records must be >= 1 or None, got {self.max_records!r}")

    def identity(self) -> dict:
        return {k: getattr(self, k) for k in ("k", "min_modality", "pairs", "data", "max_records", "batch_size",
                                              "chunk_records")}


class CrossmodalState:
    """Running top-K activations per feature and modality, and the top-`pairs` with their vectors."""

    def __init__(self, n_latents: int, d_in: int, k: int, pairs: int, device="cpu"):
        import torch

        self.k, self.pairs = k, pairs
        self.vals_MFK = torch.zeros(2, n_latents, k, device=device)  # 0 = empty (an activation is > 0)
        self.top_MFP = torch.zeros(2, n_latents, pairs, device=device)
        self.vecs_MFPD = torch.zeros(2, n_latents, pairs, d_in, device=device)

    def add(self, m: int, codes_TF, acts_TD) -> None:
        """Fold in T tokens of modality m (0 text, 1 image)."""
        import torch

        if codes_TF.shape[0] == 0:
            return
        codes_FT = codes_TF.T.clamp(min=0)
        n = min(self.k, codes_FT.shape[1])
        batch_FK = codes_FT.topk(n, dim=1).values
        self.vals_MFK[m] = torch.cat([self.vals_MFK[m], batch_FK], 1).topk(self.k, dim=1).values
        p = min(self.pairs, codes_FT.shape[1])
        bv_FP, bi_FP = codes_FT.topk(p, dim=1)
        cand_vals = torch.cat([self.top_MFP[m], bv_FP], 1)
        cand_vecs = torch.cat([self.vecs_MFPD[m], acts_TD[bi_FP]], 1)
        v, i = cand_vals.topk(self.pairs, dim=1)
        self.top_MFP[m] = v
        self.vecs_MFPD[m] = torch.gather(cand_vecs, 1, i[..., None].expand(-1, -1, cand_vecs.shape[2]))

    def result(self, min_modality: int):
        """(weight [F] with NaN for null, n_text [F], n_image [F]) as numpy."""
        import numpy as np
        import torch

        F = self.vals_MFK.shape[1]
        both = torch.cat([self.vals_MFK[0], self.vals_MFK[1]], 1)
        owner = torch.cat([torch.zeros(F, self.k), torch.ones(F, self.k)], 1).to(both.device)
        v, i = both.topk(self.k, dim=1)
        live = v > 0
        of = torch.gather(owner, 1, i)
        n_text, n_image = (live & (of == 0)).sum(1), (live & (of == 1)).sum(1)
        t = torch.nn.functional.normalize(self.vecs_MFPD[0].double(), dim=-1)
        g = torch.nn.functional.normalize(self.vecs_MFPD[1].double(), dim=-1)
        w = torch.einsum("fpd,fqd->f", t, g) / (self.pairs * self.pairs)
        ok = (n_text >= min_modality) & (n_image >= min_modality)
        w = torch.where(ok, w, torch.full_like(w, float("nan")))
        return w.cpu().numpy(), n_text.cpu().numpy().astype(np.int64), n_image.cpu().numpy().astype(np.int64)

    def state_dict(self) -> dict:
        return {"vals": self.vals_MFK.cpu(), "top": self.top_MFP.cpu(), "vecs": self.vecs_MFPD.cpu()}

    def load_state_dict(self, d: dict) -> None:
        dev = self.vals_MFK.device
        self.vals_MFK, self.top_MFP, self.vecs_MFPD = d["vals"].to(dev), d["top"].to(dev), d["vecs"].to(dev)


def fold(state: CrossmodalState, coded) -> None:
    """Fold one batch of coded records (mmsae.saev.scoring.Coded) into the state."""
    import numpy as np
    import torch

    from mmsae.models.table import IMAGE, TEXT

    if not coded:
        return
    mod = torch.as_tensor(np.concatenate([c.table.modality for c in coded]))
    codes_TF = torch.cat([c.codes_TF for c in coded])
    acts_TD = torch.cat([c.acts_TD for c in coded])
    for m, code in ((0, TEXT), (1, IMAGE)):
        sel = (mod == code).to(codes_TF.device)
        state.add(m, codes_TF[sel], acts_TD[sel])


def _open(cfg: CrossmodalConfig):
    """(meta, source, sae, model path) of the index, with fingerprint checks."""
    from mmsae.index import index_source, open_index, read_meta, resolve_paths
    from mmsae.sae import SAE
    from mmsae.store.files import model_fingerprint

    con = open_index(cfg.index)
    try:
        meta = resolve_paths(read_meta(con), cfg.index)
    finally:
        con.close()
    for key in ("model", "sae"):
        path = meta.get(key)
        if not path or not Path(str(path)).exists():
            raise FileNotFoundError(f"the index's {key} {path!r} is not found; the cross-modal weights need the "
                                    f"model and SAE the index was built with")
        if meta.get(f"{key}_fingerprint") and model_fingerprint(path) != meta[f"{key}_fingerprint"]:
            raise ValueError(f"the {key} at {path} is not the one the index was built with (fingerprint differs)")
    sae = SAE.from_pretrained(meta["sae"])
    return meta, index_source(meta, cfg.data), sae


def run_crossmodal(cfg: CrossmodalConfig) -> dict:
    """Compute (or resume) the weights, store them in the index and export Parquet; a JSON summary."""
    import json

    import numpy as np
    import torch

    from mmsae.index import open_index
    from mmsae.index.build import Rejects
    from mmsae.index.crossmodal import crossmodal_meta, export_parquet, top_crossmodal, write_crossmodal
    from mmsae.io import write_json
    from mmsae.store.files import atomic_path
    from mmsae.util import pick_device, progress

    from .scoring import coded_records

    meta, source, sae = _open(cfg)
    root = Path(cfg.index)
    n_records = len(source) if cfg.max_records is None else min(len(source), cfg.max_records)
    identity = {**cfg.identity(), "n_records": n_records, "sae_fingerprint": meta.get("sae_fingerprint")}
    con = open_index(root)
    try:
        done = crossmodal_meta(con)
    finally:
        con.close()
    state_dir = root / STATE_DIR
    if done is None or done.get("identity") != identity:
        device = pick_device(cfg.device)
        state = CrossmodalState(sae.cfg.n_latents, sae.cfg.d_in, cfg.k, cfg.pairs, device)
        state_dir.mkdir(exist_ok=True)
        saved_file = state_dir / "state.pt"
        start, reject_bytes = 0, 0
        if saved_file.exists():
            saved = torch.load(saved_file, weights_only=False)
            if saved["identity"] == identity:
                state.load_state_dict(saved["state"])
                start, reject_bytes = int(saved["next_record"]), int(saved["reject_bytes"])
        rejects = Rejects(root / REJECTS_FILE, reject_bytes)
        try:
            if start < n_records:
                from mmsae.models import load_adapter

                adapter = load_adapter(str(meta["model"]), device=device)
                sae = sae.to(device).eval()
                layer = int(meta["layer"])
                with progress(cfg.progress, n_records - start, "crossmodal") as advance:
                    for lo in range(start, n_records, cfg.chunk_records):
                        hi = min(lo + cfg.chunk_records, n_records)
                        for consumed, coded in coded_records(adapter, sae, source, range(lo, hi), layer, rejects,
                                                             cfg.batch_size):
                            fold(state, coded)
                            advance(len(consumed))
                        with atomic_path(saved_file) as tmp:
                            torch.save({"identity": identity, "state": state.state_dict(), "next_record": hi,
                                        "reject_bytes": rejects.sync()}, tmp)
            n_rejects = sum(1 for _ in open(root / REJECTS_FILE, "rb"))
        finally:
            rejects.close()
        w, nt, ni = state.result(cfg.min_modality)
        write_crossmodal(root, w, nt, ni, {"identity": identity, "n_rejects": n_rejects,
                                           "definition": "mean pairwise cosine of raw layer activations of the "
                                                         "top text and image tokens among the top-k; special "
                                                         "tokens and padding excluded"})
        shutil.rmtree(state_dir, ignore_errors=True)
    con = open_index(root)
    try:
        from mmsae.index.crossmodal import read_crossmodal

        cols = read_crossmodal(con)
        parquet = export_parquet(con, cfg.parquet or root / PARQUET_FILE)
        top = top_crossmodal(con, 10)
        info = crossmodal_meta(con)
    finally:
        con.close()
    w = cols["weight"][~np.isnan(cols["weight"])]
    summary = {"index": str(root), "parquet": str(parquet), "n_features": int(len(cols["weight"])),
               "n_weighted": int(len(w)), "n_records": n_records, "n_rejects": info.get("n_rejects"),
               "weight_mean": float(w.mean()) if len(w) else None,
               "weight_median": float(np.median(w)) if len(w) else None, "top": top}
    write_json(root / "crossmodal.json", {"config": asdict(cfg), **json.loads(json.dumps(summary, default=str))})
    return summary
