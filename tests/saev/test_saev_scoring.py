import numpy as np
import pytest
import torch

from mmsae.data import Record
from mmsae.models.table import IMAGE, TEXT
from mmsae.saev.scoring import ListSource, coded_records, random_score, score_records


def test_scores_follow_their_definitions(subject, sae, relu_sae, records):
    coded = [c for _, cs in coded_records(subject, sae, ListSource(records), range(len(records)), 3,
                                           lambda *a: None) for c in cs]
    assert len(coded) == len(records)
    l0 = score_records(subject, relu_sae, records, "l0")
    relu_coded = {c.id: c for _, cs in coded_records(subject, relu_sae, ListSource(records), range(len(records)), 3,
                                                     lambda *a: None) for c in cs}
    co = score_records(subject, sae, records, "cooccur", threshold=0.5)
    w_F = np.linspace(-1, 1, sae.cfg.n_latents)
    w_F[::3] = np.nan
    cos = score_records(subject, sae, records, "cosine", crossmodal=w_F, threshold=0.5)
    for c in coded:
        mod = c.table.modality
        assert set(np.unique(mod)) <= {TEXT, IMAGE}  # special tokens and padding left out
        codes = c.codes_TF.numpy()
        assert l0[c.id] == pytest.approx((relu_coded[c.id].codes_TF.numpy() > 0).sum(1).mean(), rel=1e-6)
        both = (codes[mod == TEXT] > 0.5).any(0) & (codes[mod == IMAGE] > 0.5).any(0)
        assert co[c.id] == both.sum()
        assert cos[c.id] == pytest.approx(np.nansum(w_F[both]))
    assert max(co.values()) > 0
    assert len(set(l0.values())) > 1  # a ReLU SAE's L0 tells records apart


def test_l0_refuses_a_topk_sae(subject, sae, records):
    with pytest.raises(ValueError, match="TopK SAE scores every record 16"):
        score_records(subject, sae, records, "l0")


def test_batching_does_not_change_scores(subject, relu_sae, records):
    a = score_records(subject, relu_sae, records, "l0", batch_size=1)
    b = score_records(subject, relu_sae, records, "l0", batch_size=4)
    assert a.keys() == b.keys()
    assert all(a[k] == pytest.approx(b[k], rel=1e-5) for k in a)


def test_random_is_keyed_by_id_and_seeded(subject, sae, records):
    a = score_records(subject, sae, records, "random", seed=1)
    b = score_records(subject, sae, records[::-1], "random", seed=1)
    assert a == b and a != score_records(subject, sae, records, "random", seed=2)
    assert a[records[0].id] == random_score(records[0].id, 1)


def test_same_text_two_images_are_two_scores(subject, sae, records):
    twins = [Record("a", records[0].images, records[0].text), Record("b", records[1].images, records[0].text)]
    scores = score_records(subject, sae, twins, "cooccur", threshold=0.0)
    assert set(scores) == {"a", "b"}


def test_bad_records_are_rejected_with_reasons(subject, sae, records):
    bad = [records[0], Record("noimg", [], "a red ball"), Record("empty", records[1].images, "<image>")]
    rejects = []
    scores = score_records(subject, sae, bad, "cooccur", rejects=rejects)
    assert set(scores) == {records[0].id}
    reasons = {r["id"]: r["reason"] for r in rejects}
    assert "needs an image" in reasons["noimg"] and "text is empty" in reasons["empty"]


def test_cosine_without_weights_says_how_to_compute_them(subject, sae, records):
    with pytest.raises(ValueError, match="mmsae crossmodal"):
        score_records(subject, sae, records, "cosine")
    with pytest.raises(ValueError, match="method must be one of"):
        score_records(subject, sae, records, "nope")


def test_clip_scores_with_the_zoo_clip(subject, sae, records):
    scores = score_records(subject, sae, records[:2], "clip")
    assert len(scores) == 2 and all(0 <= v <= 100 for v in scores.values())
