"""Running top-N and the index state against brute force over all activations (float64 reference),
with ties, different batch boundaries and a save/load in the middle."""

import numpy as np
import pytest
import torch

from index_synthetic import F_STATE, IdentitySAE, brute_state, brute_top, synthetic_records

from mmsae.index.state import IMAGE_MARK, IndexState, split_image_key, split_text_key
from mmsae.index.topn import EMPTY_KEY, RunningTopN

torch.set_num_threads(1)


def running_as_lists(top: RunningTopN):
    out = {}
    for f in range(top.n_features):
        keep = top.key_FN[f] != EMPTY_KEY
        out[f] = list(zip(top.score_FN[f][keep].double().tolist(), top.key_FN[f][keep].tolist()))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_running_topn_equals_brute_force_whatever_the_batches(seed):
    rng = np.random.default_rng(seed)
    F, N, n_items = 9, 4, 60
    # Each item (key) fires on a few features; scores from a small set so that ties are common.
    feat, key, score = [], [], []
    for k in rng.permutation(n_items) * 7 + 3:
        fs = rng.choice(F, size=rng.integers(1, 5), replace=False)
        feat += fs.tolist()
        key += [int(k)] * len(fs)
        score += rng.choice([0.0, 0.5, 1.0, 2.0, 2.0], size=len(fs)).tolist()
    feat, key, score = np.array(feat), np.array(key, np.int64), np.array(score, np.float32)
    want = brute_top(feat, score, key, F, N)
    payload = score.astype(np.float64) * 10 + key  # must travel with its item
    results = []
    for n_batches in (1, 3, 7, len(feat)):
        top = RunningTopN(F, N, {"p": ((), torch.float64), "w": ((2,), torch.int32)})
        cuts = np.sort(rng.choice(np.arange(1, len(feat)), size=n_batches - 1, replace=False)) if n_batches > 1 else []
        for part in np.split(np.arange(len(feat)), cuts):
            kept = top.update(torch.as_tensor(feat[part]), torch.as_tensor(score[part]), torch.as_tensor(key[part]),
                              lambda idx, part=part: {"p": torch.as_tensor(payload[part])[idx],
                                                      "w": torch.as_tensor(np.stack([key[part], -key[part]], 1))[idx]})
            # what update says it kept is exactly what is in the top-N now
            in_top = top.contains(torch.as_tensor(feat[part][kept.numpy()]), torch.as_tensor(key[part][kept.numpy()]))
            assert bool(in_top.all())
        got = running_as_lists(top)
        assert got == want
        filled = top.filled()
        np.testing.assert_array_equal(top.payload["p"][filled].numpy(),
                                      top.score_FN[filled].double().numpy() * 10 + top.key_FN[filled].numpy())
        np.testing.assert_array_equal(top.payload["w"][filled][:, 0].numpy(), top.key_FN[filled].numpy())
        results.append((top.score_FN.clone(), top.key_FN.clone()))
    for s, k in results[1:]:
        assert torch.equal(s, results[0][0]) and torch.equal(k, results[0][1])


def test_running_topn_ignores_nonpositive_and_nan():
    top = RunningTopN(2, 3, {})
    top.update(torch.tensor([0, 0, 1, 1]), torch.tensor([0.0, float("nan"), -1.0, 2.0]), torch.tensor([1, 2, 3, 4]))
    assert running_as_lists(top) == {0: [], 1: [(2.0, 4)]}


def state_patch_maps(state):
    pool = state.pool_tensors()
    out = {}
    for f, k, o, a in zip(pool["feature"].tolist(), pool["key"].tolist(), pool["ord"].tolist(), pool["act"].tolist()):
        out.setdefault((f, k), {})[o] = a
    return out


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("rank_by", ["max", "mean"])
def test_index_state_matches_brute_force_and_ignores_batching(tmp_path, sparse, rank_by):
    recs = synthetic_records()
    if sparse:  # the reference must see what the sparse SAE keeps: zero all but each token's top-3
        for c in recs:
            a = c.acts_SD
            keep = torch.zeros_like(a, dtype=torch.bool).scatter_(1, a.topk(3, dim=1).indices, True)
            c.acts_SD = torch.where(keep, a, torch.zeros_like(a))
    N = 3
    top, extra, maps, ttop = brute_state(recs, N, rank_by)
    sae = IdentitySAE(sparse)
    outcomes = []
    for sizes in ([9], [1] * 9, [2, 4, 3], [5, 4]):
        state = IndexState(F_STATE, N, 3, rank_by, (2, 1), "cpu")
        s = 0
        for j, size in enumerate(sizes):
            if j == 1:  # a resume point: save, load into a fresh state, continue there
                torch.save(state.state_dict(), tmp_path / "s.pt")
                state = IndexState(F_STATE, N, 3, rank_by, (2, 1), "cpu")
                state.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
            state.add_batch(recs[s:s + size], sae, sae_block=5)
            s += size
        got = running_as_lists(state.images)
        assert got == top
        pm = state_patch_maps(state)
        for f in range(F_STATE):
            for r, (score, k) in enumerate(top[f]):
                mx, mean = extra[(f, k)]
                assert state.images.payload["max"][f, r].item() == mx
                assert state.images.payload["mean"][f, r].item() == mean
                dense = np.zeros(len(maps[(f, k)]))
                for o, a in pm[(f, k)].items():
                    dense[o] = a
                np.testing.assert_array_equal(dense, maps[(f, k)])
        assert set(pm) == {(f, k) for f in range(F_STATE) for _, k in top[f]}  # evicted maps are gone
        assert running_as_lists(state.texts) == ttop
        outcomes.append({k: v.clone() for k, v in state.texts.payload.items()})
        assert state.counts["n_tokens"] == sum(len(c.table) for c in recs)
        n_fires = sum(int((c.acts_SD > 0).sum()) for c in recs)
        assert int(state.stats["n_fires"].sum()) == n_fires
    for o in outcomes[1:]:
        assert torch.equal(o["window"], outcomes[0]["window"])


def test_text_windows_show_the_neighbours_and_collapse_images():
    recs = synthetic_records(n=1)
    c = recs[0]
    c.acts_SD = torch.zeros_like(c.acts_SD)
    first_after_image = 12  # special, 2 text, 8 image, 1 newline (image 0), then text
    c.acts_SD[first_after_image, 0] = 5.0
    state = IndexState(F_STATE, 2, 2, "max", (2, 1), "cpu")
    state.add_batch(recs, IdentitySAE(False), sae_block=64)
    sample, position = split_text_key(state.texts.key_FN[0, 0])
    assert (int(sample), int(position)) == (c.index, first_after_image)
    ids = c.table.token_id
    assert state.texts.payload["window"][0, 0].tolist() == [int(ids[2]), IMAGE_MARK, int(ids[12]), int(ids[13])]
    assert split_image_key(torch.tensor(10 << 12 | 1)) == (10, 1)


def test_records_beyond_the_key_limits_are_named():
    from mmsae.index.state import key_problem, token_batch

    c = synthetic_records(n=1)[0]
    assert key_problem(c) is None
    c.table.position[-1] = 1 << 20
    assert "tokens" in key_problem(c)
    with pytest.raises(ValueError, match="record r0"):
        token_batch([c], torch.device("cpu"))
