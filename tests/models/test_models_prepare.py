"""`prepare` (the model-free half of encode) on a weight-free copy: what data-loader workers run."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from mmsae.models import Prompt
from mmsae.models.llava import with_row_ends
from mmsae.models.table import Affine, ImageTokens

FAMILIES = ["llava", "llava_next", "llava_onevision", "qwen2_vl", "idefics3", "gemma3", "chameleon"]


def _prompts():
    rng = np.random.default_rng(0)
    return [Prompt([Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8))], "describe the image")
            for h, w in ((50, 90), (100, 40), (31, 33))]


@pytest.mark.parametrize("family", FAMILIES)
def test_model_free_prepare_then_finish_equals_encode(adapter_of, family):
    a = adapter_of(family)
    light = a.model_free()
    # the worker's copy pickles without the weights (spawn/forkserver workers receive it this way)
    assert len(pickle.dumps(light)) < len(pickle.dumps(a.model.state_dict())) / 4
    with pytest.raises(AttributeError):
        light.model.parameters()  # a worker that tried to run the model fails loudly
    enc = a.encode(_prompts())
    prepared = pickle.loads(pickle.dumps(light)).prepare(_prompts())
    done = a.finish_encode(prepared)
    assert enc.inputs.keys() == done.inputs.keys()
    for k, v in enc.inputs.items():
        assert torch.equal(v, done.inputs[k]) if isinstance(v, torch.Tensor) else v == done.inputs[k]
    for t, u in zip(enc.tables, done.tables):
        for name, col in t.__dict__.items():
            np.testing.assert_array_equal(col, u.__dict__[name], err_msg=f"{family}: {name}")


def test_row_ends_follow_each_row():
    feats = ImageTokens.grid(Affine.resize(6, 4, 6, 4), 2, 3, 2.0, 2.0, tile=1)
    out = with_row_ends(feats, 3, np.array([5, 6]))
    assert out.modality.tolist() == [1, 1, 1, 2, 1, 1, 1, 2]
    assert out.patch_row.tolist() == [0, 0, 0, 5, 1, 1, 1, 6] and out.tile.tolist() == [1, 1, 1, -1] * 2
    assert out.patch_col.tolist() == [0, 1, 2, -1, 0, 1, 2, -1]
    assert np.isnan(out.box[3]).all() and out.box[4].tolist() == [0.0, 2.0, 2.0, 4.0]
