"""SAE.encode / decode check their shapes at the boundary: a wrong shape is an error naming the tensor, the
expected and the got shape, for every kind (the check is installed on each kind's own encode)."""

import pytest
import torch

from mmsae.sae import SAE, SAEConfig
from mmsae.sae.codes import Codes
from mmsae.util import ShapeError, check_shape

KINDS = ("topk", "batchtopk", "relu", "jumprelu")


def _sae(kind):
    torch.manual_seed(0)
    return SAE.from_config(SAEConfig(kind=kind, d_in=16, n_latents=32, k=4))


@pytest.mark.parametrize("kind", KINDS)
def test_good_shapes_pass_and_bad_ones_name_the_tensor(kind):
    sae = _sae(kind)
    codes = sae.encode(torch.randn(5, 16))
    assert sae.decode(codes).shape == (5, 16)
    with pytest.raises(ShapeError, match=r"x_BD must have shape \[B, D=16\], got \[2, 3, 16\]"):
        sae.encode(torch.randn(2, 3, 16))
    with pytest.raises(ValueError, match=r"d_in 16: x_BD must have shape \[B, D=16\], got \[5, 8\]"):
        sae.encode(torch.randn(5, 8))


def test_decode_checks_values_indices_and_width():
    sae = _sae("topk")
    with pytest.raises(ShapeError, match=r"codes.indices must have shape \[B=5, K=4\], got \[5, 3\]"):
        sae.decode(Codes(torch.randn(5, 4), torch.zeros(5, 3, dtype=torch.long), 32))
    with pytest.raises(ShapeError, match=r"codes.values must have shape \[B, F=32\], got \[5, 31\]"):
        sae.decode(Codes(torch.randn(5, 31), None, 32))
    with pytest.raises(ShapeError, match="n_latents 64, the SAE has 32"):
        sae.decode(Codes(torch.randn(5, 64), None, 64))


def test_check_shape_binds_only_the_sizes_given():
    check_shape("t", torch.zeros(2, 3), "B D")
    check_shape("t", torch.zeros(2, 3), "B D", D=3, B=None)
    with pytest.raises(ShapeError, match=r"t must have shape \[B, S, D=4\], got \[2, 3\]"):
        check_shape("t", torch.zeros(2, 3), "B S D", D=4)

