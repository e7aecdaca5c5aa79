"""token_batch (array operations over the whole batch) against a plain per-record, per-image reference."""

import numpy as np
import torch
from index_synthetic import synthetic_records

from mmsae.index.state import IMAGE_MARK, image_key, token_batch
from mmsae.models.table import IMAGE, TokenTable
from mmsae.store.stream import Captured


def reference(captured):
    """Spelled out one record and one image at a time."""
    out = {k: [] for k in ("sample", "mod", "pos", "slot", "ord", "disp", "lo", "hi")}
    display, slot_key, slot_tokens = [], [], []
    for c in captured:
        t = c.table
        slot, ord_ = [-1] * len(t), [-1] * len(t)
        for m in sorted({int(x) for x, md in zip(t.image_index, t.modality) if md == IMAGE and x >= 0}):
            n = 0
            for p in range(len(t)):
                if t.modality[p] == IMAGE and t.image_index[p] == m:
                    slot[p], ord_[p], n = len(slot_key), n, n + 1
            slot_key.append(int(image_key(c.index, m)))
            slot_tokens.append(n)
        lo, disp = len(display), []
        for p in range(len(t)):
            inside = t.image_index[p] >= 0
            if not inside:
                disp.append(len(display))
                display.append(int(t.token_id[p]))
            else:
                disp.append(-1)
                if p == 0 or t.image_index[p - 1] < 0:
                    display.append(IMAGE_MARK)
        for p in range(len(t)):
            for name, v in (("sample", c.index), ("mod", int(t.modality[p])), ("pos", int(t.position[p])),
                            ("slot", slot[p]), ("ord", ord_[p]), ("disp", disp[p]), ("lo", lo),
                            ("hi", len(display))):
                out[name].append(v)
    return out, display, slot_key, slot_tokens


def test_token_batch_equals_the_per_record_reference():
    recs = synthetic_records(seed=3, n=7)
    empty = Captured(99, "empty", None, TokenTable.empty(0), torch.zeros(0, 6))
    # two images back to back (one display mark for the pair) at the very start of a sequence
    t = TokenTable.empty(6)
    t.position[:] = np.arange(6)
    t.modality[:4], t.image_index[:4] = IMAGE, [0, 0, 1, 1]
    t.token_id[4:] = [11, 12]
    adjacent = Captured(50, "adjacent", None, t, torch.zeros(6, 6))
    batch = [recs[0], empty, adjacent, *recs[1:], empty]
    tb = token_batch(batch, torch.device("cpu"))
    ref, display, slot_key, slot_tokens = reference(batch)
    got = {"sample": tb.sample_T, "mod": tb.modality_T, "pos": tb.position_T, "slot": tb.slot_T, "ord": tb.ord_T,
           "disp": tb.disp_T, "lo": tb.lo_T, "hi": tb.hi_T}
    for name, values in ref.items():
        assert got[name].tolist() == values, name
        assert got[name].dtype == torch.int64
    assert tb.display_ids.tolist() == display and tb.slot_key.tolist() == slot_key
    assert tb.slot_tokens.tolist() == slot_tokens
    assert token_batch([], torch.device("cpu")).sample_T.numel() == 0
