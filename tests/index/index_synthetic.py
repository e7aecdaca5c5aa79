"""Synthetic token sequences, an identity "SAE" and brute-force references for the index tests."""

import numpy as np
import torch

from mmsae.models.table import IMAGE, SPECIAL, TEXT, TokenTable
from mmsae.sae import Codes
from mmsae.store.stream import Captured


def brute_top(feat, score, key, F, N):
    """Per feature: [(score, key)] sorted by score desc (float64), key asc, first N, score > 0 only."""
    out = {}
    for f in range(F):
        m = (feat == f) & (score > 0)
        items = sorted(zip(score[m].astype(np.float64), key[m]), key=lambda t: (-t[0], t[1]))[:N]
        out[f] = items
    return out


F_STATE = 6


class IdentitySAE:
    """codes = relu(x): dense (ReLU kind) or sparse (top-3 as a TopK SAE would return)."""

    def __init__(self, sparse: bool):
        self.sparse = sparse

    def encode(self, x):
        v = torch.relu(x)
        if not self.sparse:
            return Codes(v, None, F_STATE)
        top = v.topk(3, dim=1)
        return Codes(top.values, top.indices, F_STATE)


def synthetic_records(seed=0, n=9):
    """Sequences: special, text, image 0 (2 tiles of 2x2 patches + a newline), text, maybe image 1, text."""
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n):
        parts = [("s", 1), ("t", 2), ("i0", 8), ("n0", 1), ("t", 3)] + ([("i1", 4), ("t", 1)] if i % 3 == 0 else [])
        S = sum(k for _, k in parts)
        t = TokenTable.empty(S)
        t.position[:] = np.arange(S)
        t.token_id[:] = rng.integers(10, 40, S)
        s = 0
        for kind, k in parts:
            sl = slice(s, s + k)
            if kind == "s":
                t.modality[sl] = SPECIAL
            elif kind == "t":
                t.modality[sl] = TEXT
            elif kind.startswith("n"):
                t.modality[sl], t.image_index[sl] = SPECIAL, int(kind[1])
            else:
                t.modality[sl], t.image_index[sl] = IMAGE, int(kind[1])
                t.token_id[sl] = 4
                j = np.arange(k)
                t.tile[sl], t.patch_row[sl], t.patch_col[sl] = j // 4, (j % 4) // 2, j % 2
                t.box[sl] = np.stack([j % 2 * 8, (j % 4) // 2 * 8, j % 2 * 8 + 8, (j % 4) // 2 * 8 + 8], 1)
            s += k
        acts = rng.choice([0.0, 0.0, 0.0, 1.0, 2.0, 3.0], size=(S, F_STATE)).astype(np.float32)
        recs.append(Captured(10 + i, f"r{i}", None, t, torch.as_tensor(acts)))
    return recs


def brute_state(recs, N, rank_by):
    """Reference examples, patch maps and text tops from the dense activations, in float64."""
    feat, score, key, extra, maps = [], [], [], {}, {}
    tfeat, tact, tkey = [], [], []
    for c in recs:
        a = c.acts_SD.numpy().astype(np.float64)
        t = c.table
        for m in np.unique(t.image_index[t.modality == IMAGE]):
            sel = np.flatnonzero((t.modality == IMAGE) & (t.image_index == m))
            k = c.index << 12 | int(m)
            for f in range(F_STATE):
                col = a[sel, f]
                mx, mean = col.max(), np.float32(col.mean())
                feat.append(f), key.append(k), score.append(mx if rank_by == "max" else mean)
                extra[(f, k)] = (mx, float(mean))
                maps[(f, k)] = col
        for p in np.flatnonzero(t.modality == TEXT):
            for f in range(F_STATE):
                tfeat.append(f), tact.append(a[p, f]), tkey.append(c.index << 20 | int(t.position[p]))
    top = brute_top(np.array(feat), np.array(score), np.array(key, np.int64), F_STATE, N)
    ttop = brute_top(np.array(tfeat), np.array(tact), np.array(tkey, np.int64), F_STATE, 3)
    return top, extra, maps, ttop
