"""Adapter.capture checks shapes at the boundary: its inputs' ids are [B, S] and what it returns is
[B, S, D=d_model]; a mismatch is an error naming the tensor, the expected and the got shape."""

import threading

import pytest
import torch
from PIL import Image

from mmsae.models import Prompt
from mmsae.util import ShapeError


def test_capture_returns_b_s_d_and_rejects_flat_ids(adapter_of):
    a = adapter_of("llava")
    enc = a.encode([Prompt([Image.new("RGB", (40, 30), "red")], "what colour")] * 2)
    acts_BSD = a.capture(enc.inputs, 1)
    assert acts_BSD.shape == (*enc.inputs["input_ids"].shape, a.d_model)
    flat = dict(enc.inputs, input_ids=enc.inputs["input_ids"].reshape(-1))
    with pytest.raises(ShapeError, match=r"inputs\['input_ids'\] must have shape \[B, S\], got \[\d+\]"):
        a.capture(flat, 1)


def test_a_block_output_of_the_wrong_width_is_named(adapter_of, monkeypatch):
    a = adapter_of("llava")
    enc = a.encode([Prompt([Image.new("RGB", (40, 30), "red")], "what colour")])
    block = a.decoder_layers()[1]
    # a block whose output is cut to half its width stands in for a family unwrapped wrongly
    handle = block.register_forward_hook(lambda m, args, out: (out[0] if isinstance(out, tuple) else out)[..., ::2])
    try:
        with pytest.raises(ShapeError, match=rf"acts_BSD must have shape \[B=1, S=\d+, D={a.d_model}\], got \[1, \d+, "
                                             rf"{a.d_model // 2}\]"):
            a.capture(enc.inputs, 1)
    finally:
        handle.remove()
    assert torch.isfinite(a.capture(enc.inputs, 1)).all()  # the adapter is unharmed


def test_a_capture_ignores_another_threads_forward(adapter_of):
    """Harvest runs captures side by side in threads (`store.stream.forwards`): each one's hook must
    take the block output of its own thread's forward only. Here thread A's forward starts thread B's
    whole capture while A's hook is still registered."""
    a = adapter_of("llava")
    enc_A = a.encode([Prompt([Image.new("RGB", (40, 30), "red")], "what colour")])
    enc_B = a.encode([Prompt([Image.new("RGB", (40, 30), "blue")], "what colour is it")])
    want_A, want_B = a.capture(enc_A.inputs, 0, early_exit=False), a.capture(enc_B.inputs, 0)
    got = {}

    def run_B(_module, _args, _out):
        if "B" not in got:
            t = threading.Thread(target=lambda: got.__setitem__("B", a.capture(enc_B.inputs, 0)))
            t.start()
            t.join()

    handle = a.decoder_layers()[1].register_forward_hook(run_B)
    try:
        got["A"] = a.capture(enc_A.inputs, 0, early_exit=False)
    finally:
        handle.remove()
    assert torch.equal(got["A"], want_A) and torch.equal(got["B"], want_B)
