import numpy as np
import pytest
import torch

from mmsae.score import ImagePool, build_pool


@pytest.mark.parametrize("kind", ["topk", "relu"])
def test_pool_holds_each_images_activation_maps(tmp_path, kind):
    """The pool streams records through the indexed model + SAE; its per-patch activation maps and per-image
    maxima equal a direct forward pass of each record alone (sparse TopK codes and dense ReLU codes alike)."""
    from mmsae.data import open_source
    from mmsae.models import IMAGE, Prompt, load_adapter
    from mmsae.sae import SAE
    from mmsae.sae.config import SAEConfig
    from mmsae.zoo import model_dir

    extra = {"k": 4} if kind == "topk" else {"l1_coefficient": 1.0}
    sae = SAE.from_config(SAEConfig(kind=kind, d_in=128, n_latents=32, hook_layer=3, **extra))
    sae.reset_parameters(torch.Generator().manual_seed(0))
    sae.save_pretrained(tmp_path / "sae")
    meta = {"model": str(model_dir("subject")), "sae": str(tmp_path / "sae"), "layer": 3,
            "data": "world:n=12,seed=0", "prompt": "<image>"}
    features = [0, 5, 17, 31]
    pool = build_pool(meta, features, n_records=5, seed=0, batch_size=2, device="cpu")
    assert len(pool.keys) == 5 and {j for _, j in pool.keys} == {0} and pool.rejects == []
    assert pool.acts_IF.shape == (5, 4) and (pool.acts_IF >= 0).all() and pool.acts_IF.any()

    adapter, src = load_adapter(model_dir("subject"), device="cpu"), open_source(meta["data"], prompt="<image>")
    for row, (i, _) in enumerate(pool.keys):
        rec = src.record(i)
        enc = adapter.encode([Prompt(rec.images, rec.text)])
        with torch.no_grad():
            acts_SD = adapter.capture(enc.inputs, 3)[0]
            on_image = torch.as_tensor(np.flatnonzero(enc.tables[0].modality == IMAGE))
            dense = sae.encode(acts_SD[on_image]).to_dense()[:, features].clamp(min=0)
        np.testing.assert_allclose(pool.acts_IF[row], dense.max(0).values.numpy(), atol=1e-4)
        for col, f in enumerate(features):
            np.testing.assert_allclose(pool.activation_map(row, f), dense[:, col].numpy(), atol=1e-4)
        im = pool.images[row]
        assert im.sample_id == rec.id and im.size == (64, 64)
        np.testing.assert_array_equal(im.box_P4, enc.tables[0].box[on_image.numpy()])

    # negatives: only images where the feature stays at or below tolerance x its max activation
    col = int(np.argmax((pool.acts_IF > 0).sum(0) < 5))  # a feature silent on some image
    f, peak = features[col], float(pool.acts_IF[:, col].max())
    neg = pool.negatives(f, peak, 10, np.random.default_rng(0), tolerance=0.0)
    assert neg and all(pool.acts_IF[pool.keys.index(k), col] == 0 for k in neg)
    assert pool.negatives(f, peak, 10, np.random.default_rng(0), tolerance=0.0, exclude=set(neg)) == []
    assert len(pool.negatives(f, peak, 10, np.random.default_rng(0), tolerance=1.0)) == 5


def test_pool_names_what_is_missing_or_changed(tmp_path):
    meta = {"model": str(tmp_path / "no-model"), "sae": str(tmp_path), "layer": 3, "data": "world:n=4"}
    with pytest.raises(FileNotFoundError, match="meta.model"):
        build_pool(meta, [0])
    with pytest.raises(ValueError, match="'layer'"):
        build_pool({**meta, "layer": None}, [0])
    pool = ImagePool([(0, 0), (1, 0), (2, 0)], [7], np.array([[0.0], [0.5], [0.004]]), [])
    assert pool.negatives(7, 1.0, 5, np.random.default_rng(0), tolerance=0.01) == [(0, 0), (2, 0)]
    with pytest.raises(ValueError, match="only per-image maxima"):
        pool.activation_map(0, 7)
    # an index whose model was retrained since: its activations on random images would be another model's
    from mmsae.zoo import model_dir

    with pytest.raises(ValueError, match="fingerprint mismatch"):
        build_pool({"model": str(model_dir("subject")), "model_fingerprint": "0" * 64, "sae": str(tmp_path),
                    "layer": 3, "data": "world:n=4"}, [0])
