"""Online training on a tiny LLaVA: windows hold exactly the stream's tokens, a resumed source yields
the same batches bit for bit, and kill -9 + rerun of `mmsae train --online` ends with the same SAE."""

import json
import multiprocessing
import os
import signal
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mmsae.data import open_source
from mmsae.models import load_adapter
from mmsae.store import selected
from mmsae.store.stream import capture_batches
from mmsae.cli import command
from mmsae.train.online import OnlineBatches

sys.path.insert(0, str(Path(__file__).parent))
from train_script import assert_same_run  # noqa: E402

LAYER = 1
DATA = "world:n=5,seed=2"
PROMPT = "<image> describe the picture"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from mmsae.models.tiny import build_llava

    return build_llava(tmp_path_factory.mktemp("llava"))


@pytest.fixture(scope="module")
def adapter(model):
    return load_adapter(str(model))


@pytest.fixture(scope="module")
def source():
    return open_source(DATA, prompt=PROMPT)


def _online(adapter, source, **kw):
    args = dict(batch_size=8, seed=4, window_tokens=40, capture_batch_size=2, epochs=2)
    return OnlineBatches(adapter, source, LAYER, **{**args, **kw})


def _stream(adapter, source, epochs=2, capture=2):
    """Every selected token of `epochs` passes over the data, in order, captured in the same groups."""
    class Cycled:
        def record(self, g):
            return source.record(g % len(source))

    parts = []
    n = epochs * len(source)
    for lo in range(0, n, capture):
        for _, caps in capture_batches(adapter, Cycled(), range(lo, min(lo + capture, n)), LAYER, capture, print):
            for c in caps:
                parts.append(c.acts_SD[torch.as_tensor(selected(c.table.modality, "all", False).nonzero()[0])].float())
    return torch.cat(parts)


@pytest.fixture(scope="module")
def reference(adapter, source):
    return list(_online(adapter, source))


def _rows_sorted(x):
    return x[torch.argsort(x[:, 0])]


def test_windows_hold_exactly_the_streams_tokens(adapter, source, reference):
    stream = _stream(adapter, source)
    per_window = 40 // 8
    n_full = stream.shape[0] // 40
    tail = (stream.shape[0] - 40 * n_full) // 8  # batches of the last, partial window
    assert len(reference) == n_full * per_window + tail and n_full >= 3
    for w in range(n_full + (tail > 0)):
        got = torch.cat(reference[w * per_window : (w + 1) * per_window])
        want = stream[w * 40 : w * 40 + got.shape[0]] if w < n_full else None
        if want is not None:
            torch.testing.assert_close(_rows_sorted(got), _rows_sorted(want))
    # a window is shuffled: its batches are not the stream's order
    assert not torch.equal(torch.cat(reference[:per_window]), stream[:40])
    assert all(b.shape == (8, adapter.d_model) for b in reference)


@pytest.mark.parametrize("cut", [0, 3, 5, 7, 13])  # 5: right at the end of window 0
def test_resumed_source_yields_the_same_batches_bitwise(adapter, source, reference, cut):
    first = _online(adapter, source)
    it = iter(first)
    for _ in range(cut):
        next(it)
    state = first.state_dict()
    if cut == 5:
        assert (state["window"], state["batch"]) == (1, 0)  # nothing of window 0 is redone
    again = _online(adapter, source)
    again.load_state_dict(state)
    rest = list(again)
    assert len(rest) == len(reference) - cut
    for want, got in zip(reference[cut:], rest):
        assert torch.equal(want, got)


def test_mean_norm_is_over_the_first_window_and_keeps_it(adapter, source, reference, monkeypatch):
    src = _online(adapter, source)
    mean = src.mean_norm()
    first_window = torch.cat(reference[:5])
    assert mean == pytest.approx(float(first_window.double().norm(dim=1).mean()), rel=1e-6)
    calls = []
    original = type(adapter).capture
    monkeypatch.setattr(type(adapter), "capture", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    it = iter(src)
    got = [next(it) for _ in range(5)]
    assert calls == [] and all(torch.equal(a, b) for a, b in zip(got, reference))
    assert src.state_dict()["mean_norm"] == mean


def test_resume_refuses_other_settings(adapter, source):
    state = _online(adapter, source).state_dict()
    with pytest.raises(ValueError, match="batch_size"):
        _online(adapter, source, batch_size=4).load_state_dict(state)
    with pytest.raises(ValueError, match="tokens must be"):
        _online(adapter, source, tokens="audio")
    with pytest.raises(ValueError, match="smaller than the batch size"):
        _online(adapter, source, window_tokens=4)


def _app():
    return command()


def _train_args(model, out):
    return ["train", "--online", "--model", str(model), "--data", "world:n=6,seed=2", "--prompt", PROMPT,
            "--layer", str(LAYER), "--out", str(out), "--steps", "24", "--batch-size", "16", "--window-tokens", "64",
            "--capture-batch-size", "2", "--checkpoint-every", "3", "--log-every", "4", "--k", "4", "--n-latents", "64",
            "--warmup-steps", "4", "--lr", "0.003", "--dead-tokens", "500", "--seed", "3"]


def _die_at_capture(n, model, out):
    """In a forked child: train online and SIGKILL ourselves at the n-th forward pass of the model."""
    from mmsae.models.base import Adapter

    calls, original = [0], Adapter.capture

    def capture(self, *a, **k):
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, *a, **k)

    Adapter.capture = capture
    CliRunner().invoke(_app(), _train_args(model, out))
    os._exit(0)


def _checkpoint(out):
    path = out / "checkpoint.pt"
    return torch.load(path, map_location="cpu", weights_only=False) if path.exists() else None


def test_cli_online_kill9_then_resume_matches_uninterrupted_run(model, tmp_path):
    res = CliRunner().invoke(_app(), _train_args(model, tmp_path / "ref"))
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["steps"] == 24 and summary["n_latents"] == 64
    ref_ckpt = _checkpoint(tmp_path / "ref")
    assert ref_ckpt["sae_config"]["hook_layer"] == LAYER and ref_ckpt["sae_config"]["model"] == str(model.resolve())
    assert ref_ckpt["train_config"]["norm_scale"] > 0 and ref_ckpt["data"][0]["mean_norm"] > 0

    out = tmp_path / "killed"
    child = multiprocessing.get_context("fork").Process(target=_die_at_capture, args=(9, model, out))
    child.start()
    child.join(600)
    assert child.exitcode == -signal.SIGKILL
    killed = _checkpoint(out)
    assert killed is not None and 3 <= killed["step"] < 24 and not (out / "sae").exists()
    state = killed["data"][0]
    assert state["window"] >= 1 and state["batch"] > 0  # mid-stream and mid-window: a window is redone

    res = CliRunner().invoke(_app(), _train_args(model, out))
    assert res.exit_code == 0, res.output
    assert_same_run(tmp_path / "ref", out)
    saved = json.loads((out / "sae" / "config.json").read_text())
    assert saved["hook_layer"] == LAYER and saved["norm_scale"] == pytest.approx(ref_ckpt["norm_scale"])


@pytest.mark.parametrize("args,message", [
    (["--online"], "--online needs --layer"),
    (["--online", "--layer", "9"], "out of range"),
    (["--online", "--layer", "1", "--select", "audio"], "tokens must be"),
    (["--online", "--layer", "1", "--store", "x.pt"], "either --store or --online"),
])
def test_cli_online_bad_settings_fail_before_loading(model, tmp_path, args, message):
    res = CliRunner().invoke(_app(), ["train", "--model", str(model), "--out", str(tmp_path / "o"), "--steps", "2", *args])
    assert res.exit_code != 0
    assert message in res.output + str(res.exception), res.output
