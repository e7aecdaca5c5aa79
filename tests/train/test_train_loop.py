"""The trainer in one process: it learns, folds the normalisation, handles bad input clearly."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from mmsae.sae import SAE, SAEConfigError
from mmsae.train import TensorBatches, TrainConfig, Trainer, TrainingError, train
from mmsae.train.state import DeadLatentTracker, load_checkpoint, lr_lambda

sys.path.insert(0, str(Path(__file__).parent))
from train_script import synthetic_acts  # noqa: E402


def _cfg(**kw):
    base = dict(kind="topk", n_latents=64, k=4, steps=60, lr=3e-3, warmup_steps=5, log_every=5, checkpoint_every=20, dead_tokens=500)
    base.update(kw)
    return TrainConfig(**base)


def test_topk_learns_and_saves_a_folded_sae(tmp_path):
    acts = 7.0 * synthetic_acts()
    sae = train(_cfg(), TensorBatches(acts, 64), tmp_path)
    hist = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert hist[-1]["fvu"] < 0.7 * hist[0]["fvu"] and hist[-1]["fvu"] < 0.4
    assert hist[-1]["tokens"] == 60 * 64 and all(h["l0"] <= 4 for h in hist)
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loaded = SAE.from_pretrained(tmp_path / "sae")
    expected_scale = math.sqrt(16) / float(acts.norm(dim=1).mean())
    assert loaded.cfg.norm_scale == pytest.approx(expected_scale, rel=0.15) and loaded.cfg.folded
    # The saved weights act on raw activations: their FVU on raw data matches the training FVU.
    with torch.no_grad():
        out = loaded(acts[:512])
    assert float(out.fvu) < 1.5 * hist[-1]["fvu"] + 0.02
    torch.testing.assert_close(loaded.W_dec.norm(dim=1), torch.full((64,), 1 / loaded.cfg.norm_scale), rtol=1e-4, atol=0)
    assert sae.cfg == loaded.cfg


@pytest.mark.parametrize("kind,extra", [("relu", dict(l1_coefficient=0.05)), ("jumprelu", dict(l1_coefficient=0.01, jumprelu_init_threshold=0.1, jumprelu_bandwidth=0.05)), ("batchtopk", {})])
def test_other_kinds_train(tmp_path, kind, extra):
    train(_cfg(kind=kind, **extra), TensorBatches(synthetic_acts(), 64), tmp_path)
    hist = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert hist[-1]["fvu"] < 0.6 * hist[0]["fvu"]
    assert SAE.from_pretrained(tmp_path / "sae").cfg.kind == kind


class _Poisoned(TensorBatches):
    def __init__(self, *a, bad=(), **k):
        super().__init__(*a, **k)
        self.bad = set(bad)
        self.seen = 0

    def __iter__(self):
        for b in super().__iter__():
            self.seen += 1
            if self.seen in self.bad:
                b = b.clone()
                b[0, 0] = float("nan") if self.seen % 2 else float("inf")
            yield b


def test_non_finite_batches_are_counted_skipped_then_abort(tmp_path):
    acts = synthetic_acts()
    train(_cfg(steps=10, max_bad_batches=3), _Poisoned(acts, 64, bad=(1, 4, 5)), tmp_path / "ok")
    ckpt = load_checkpoint(tmp_path / "ok")
    assert ckpt["bad_batches"] == 3 and ckpt["step"] == 10

    out = tmp_path / "abort"
    with pytest.raises(TrainingError, match="NaN/Inf"):
        train(_cfg(steps=40, max_bad_batches=2), _Poisoned(acts, 64, bad=(25, 26, 27)), out)
    assert load_checkpoint(out)["step"] == 20  # the checkpoint before the abort is intact


def test_width_mismatch_and_bad_k_are_clear(tmp_path):
    class Mixed(TensorBatches):
        def __iter__(self):
            for i, b in enumerate(super().__iter__()):
                yield b if i < 3 else b[:, :8]

    with pytest.raises(TrainingError, match="width 8 does not match"):
        train(_cfg(), Mixed(synthetic_acts(), 64), tmp_path / "w")
    with pytest.raises(SAEConfigError, match="k = 64 must be smaller"):
        train(_cfg(k=64), TensorBatches(synthetic_acts(), 64), tmp_path / "k")


def test_resume_refuses_a_different_run_and_continues_the_same(tmp_path):
    acts = synthetic_acts()
    train(_cfg(steps=20), TensorBatches(acts, 64), tmp_path)
    with pytest.raises(TrainingError, match="different run"):
        train(_cfg(steps=40, n_latents=32), TensorBatches(acts, 64), tmp_path)
    t = Trainer(_cfg(steps=30), TensorBatches(acts, 64), tmp_path)
    t.fit()
    assert t.step == 30 and t.tokens == 30 * 64


def test_schedule_and_dead_tracker():
    f = lr_lambda(100, 10, 0.2)
    assert f(0) == pytest.approx(0.1) and f(9) == 1.0 and f(50) == 1.0
    assert f(80) == pytest.approx(1.0) and f(90) == pytest.approx(0.5) and f(99) == pytest.approx(0.05)
    tr = DeadLatentTracker(4, threshold=100)
    tr.update(torch.tensor([1, 0, 0, 0]), 60)
    tr.update(torch.tensor([0, 1, 0, 0]), 60)
    assert tr.tokens_since_fired_F.tolist() == [60, 0, 120, 120]
    assert tr.dead_mask().tolist() == [False, False, True, True] and tr.dead_fraction() == 0.5


def test_selection_dtype_auto_follows_the_hardware_and_float32_is_exact(tmp_path, monkeypatch):
    import mmsae.train.loop as loop

    acts = synthetic_acts()[:64]
    monkeypatch.setattr(loop, "int8_speedup", lambda *a: 1.0)  # a CPU whose int8 product is no faster
    for fast, want in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(loop, "bf16_is_fast", lambda device, fast=fast: fast)
        t = Trainer(_cfg(), TensorBatches(acts, 64), tmp_path / str(fast))
        t._initialise(acts)
        assert t.sae.selection_dtype == want
    # BatchTopK's selection uses the bf16 product as is: "auto" keeps it exact
    monkeypatch.setattr(loop, "bf16_is_fast", lambda device: True)
    t = Trainer(_cfg(kind="batchtopk"), TensorBatches(acts, 64), tmp_path / "batchtopk")
    t._initialise(acts)
    assert t.sae.selection_dtype == torch.float32
    for choice, want in (("float32", torch.float32), (None, torch.float32), ("bfloat16", torch.bfloat16)):
        t = Trainer(_cfg(selection_dtype=choice), TensorBatches(acts, 64), tmp_path / str(choice))
        t._initialise(acts)
        assert t.sae.selection_dtype == want
    with pytest.raises(ValueError, match="selection_dtype must be one of"):
        _cfg(selection_dtype="float16")


def test_bf16_and_float32_selection_train_to_the_same_sae(tmp_path):
    """bf16 only narrows the choice of latents, so a short run lands where the exact one does."""
    acts = 7.0 * synthetic_acts()
    a = train(_cfg(steps=20, selection_dtype="float32", plots=False), TensorBatches(acts, 64), tmp_path / "f32")
    b = train(_cfg(steps=20, selection_dtype="bfloat16", plots=False), TensorBatches(acts, 64), tmp_path / "bf16")
    for name, p in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[name], p, rtol=1e-4, atol=1e-5, msg=name)


def test_auto_picks_int8_only_where_the_probe_finds_it_faster_and_int8_is_refused_where_uncertified(
        tmp_path, monkeypatch):
    import mmsae.train.loop as loop
    from mmsae.sae import SAEConfig

    monkeypatch.setattr(loop, "bf16_is_fast", lambda device: False)
    topk = SAE.from_config(SAEConfig(kind="topk", d_in=16, n_latents=64, k=4))
    for speedup, want in ((2.0, "int8"), (1.29, "float32"), (0.0, "float32")):
        monkeypatch.setattr(loop, "int8_speedup", lambda *a, s=speedup: s)
        got = loop.choose_selection("auto", topk, torch.device("cpu"))
        assert got["dtype"] == want and got["int8_speedup"] == speedup and str(speedup) in got["reason"]
    assert loop.choose_selection("int8", topk, torch.device("cpu")) == {"dtype": "int8", "reason": "configured"}
    batch = SAE.from_config(SAEConfig(kind="batchtopk", d_in=16, n_latents=64, k=4))
    with pytest.raises(ValueError, match="int8 needs the topk kind.*'batchtopk'"):
        loop.choose_selection("int8", batch, torch.device("cpu"))
    with pytest.raises(ValueError, match="CPU only, got device cuda"):
        loop.choose_selection("int8", topk, torch.device("cuda"))


def test_int8_and_float32_selection_train_to_the_same_sae(tmp_path):
    """int8's selection is certified float32's, so the weights agree to rounding."""
    acts = 7.0 * synthetic_acts()
    a = train(_cfg(steps=20, selection_dtype="float32", plots=False), TensorBatches(acts, 64), tmp_path / "f32")
    trainer = Trainer(_cfg(steps=20, selection_dtype="int8", plots=False), TensorBatches(acts, 64), tmp_path / "int8")
    b = trainer.fit()
    assert trainer.selection["dtype"] == "int8" and trainer.sae.selection_stats["rows"] == 20 * 64
    for name, p in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[name], p, rtol=1e-4, atol=1e-5, msg=name)


def test_run_records_the_resolved_selection_dtype_in_config_json(tmp_path):
    from mmsae.train.run import TrainJob, run_train

    acts = synthetic_acts()[:256]
    torch.save(acts, tmp_path / "acts.pt")
    out = tmp_path / "run"
    summary = run_train(TrainJob(out=str(out), store=str(tmp_path / "acts.pt"), batch_size=64, n_latents=64, k=4,
                                 steps=2, warmup_steps=1, plots=False, selection_dtype="auto"))
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["selection_dtype"] == summary["selection"]["dtype"]
    assert resolved["selection_dtype"] in ("bfloat16", "int8", "float32")


def test_a_resumed_auto_run_keeps_its_selection_and_int8_margin_whatever_a_new_probe_says(tmp_path, monkeypatch):
    import mmsae.train.loop as loop

    acts = 7.0 * synthetic_acts()
    monkeypatch.setattr(loop, "bf16_is_fast", lambda device: False)
    monkeypatch.setattr(loop, "int8_speedup", lambda *a: 2.0)
    first = Trainer(_cfg(steps=4, plots=False), TensorBatches(acts, 64), tmp_path)
    first.fit()
    assert first.selection["dtype"] == "int8"
    first_margin = first.sae.int8_margin
    monkeypatch.setattr(loop, "int8_speedup", lambda *a: 1.0)  # a new probe would now pick float32
    again = Trainer(_cfg(steps=6, plots=False), TensorBatches(acts, 64), tmp_path)
    again.fit()
    assert again.step == 6 and again.selection["dtype"] == "int8" and again.selection["reason"].startswith("resumed")
    assert again.sae.int8_margin >= first_margin
    explicit = Trainer(_cfg(steps=8, plots=False, selection_dtype="float32"), TensorBatches(acts, 64), tmp_path)
    explicit.fit()  # a configured dtype is obeyed on resume
    assert explicit.selection == {"dtype": "float32", "reason": "configured"}
