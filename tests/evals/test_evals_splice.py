"""Spliced LM metrics on the zoo subject with world records: an exact reconstruction recovers
everything, ablations hurt, each split replaces only its own positions, the CLI wires the store's
settings in and fails early on impossible ones."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mmsae.data import Record
from mmsae.cli import command
from mmsae.evals.splice import evaluate_splice, next_token_targets, reconstruct, splice_fn, split_masks
from mmsae.models import Prompt, load_adapter
from mmsae.models.intervene import Site
from mmsae.models.table import IMAGE, TEXT
from mmsae.sae import SAE, SAEConfig
from mmsae.world import World, WorldConfig
from mmsae.world.text import chat_turns, questions
from mmsae.zoo import model_dir

LAYER = 3
PROMPT = "<s> user : <image> {caption}"
MARKER = "assistant :"


class ShiftSAE(torch.nn.Module):
    """A stand-in SAE whose reconstruction is x + shift (shift 0: exact)."""

    def __init__(self, d_in: int, shift: float = 0.0):
        super().__init__()
        self.cfg = SAEConfig(kind="topk", d_in=d_in, n_latents=2 * d_in, k=1, hook_layer=LAYER)
        self.shift = shift

    def encode(self, x_ND):
        return x_ND

    def decode(self, codes):
        return codes + self.shift


class RecordingAdapter:
    """Delegates to an adapter; records (input, output) of every intervention."""

    def __init__(self, adapter):
        self._adapter, self.calls = adapter, []

    def __getattr__(self, name):
        return getattr(self._adapter, name)

    def intervene(self, layer, fn):
        def recorded(acts_BSD, site):
            out = fn(acts_BSD, site)
            self.calls.append((acts_BSD.detach().clone(), out.detach().clone()))
            return out

        return self._adapter.intervene(layer, recorded)


@pytest.fixture(scope="module")
def adapter():
    return load_adapter(str(model_dir("subject")))


class ChatSource:
    """World scenes with four question/answer turns each, in the zoo's chat format."""

    def __init__(self, n: int, seed: int = 3):
        self.world, self.n = World(WorldConfig(seed=seed)), n

    def __len__(self):
        return self.n

    def record(self, i):
        scene = self.world[i]
        turns = chat_turns(questions(scene, np.random.default_rng(i))[:4])
        return Record(f"chat-{i}", [scene.pil], " ".join(f"{q} {a}" for q, a in turns))


def _answer_words(i: int) -> list[str]:
    """The answer words of ChatSource record i (each answer chunk is 'words </s>')."""
    turns = chat_turns(questions(ChatSource(i + 1).world[i], np.random.default_rng(i))[:4])
    return [w for _, a in turns for w in a.split()[:-1]]


@pytest.fixture(scope="module")
def source():
    return ChatSource(4)


@pytest.fixture(scope="module")
def recorded(adapter, source):
    recorder = RecordingAdapter(adapter)
    out = evaluate_splice(recorder, ShiftSAE(adapter.d_model), source, LAYER, 2, batch_size=2, answer_marker=MARKER)
    return out, recorder.calls


def test_exact_reconstruction_recovers_everything_and_ablations_hurt(recorded):
    exact = recorded[0]
    for split in ("all", "text", "image"):
        r = exact[split]
        assert r["n_tokens"] == len(_answer_words(0) + _answer_words(1)) and r["n_replaced"] > 0
        assert r["ce_sae"] == r["ce_clean"] and r["delta_lm_loss"] == 0.0
        assert r["kl_sae"] == pytest.approx(0.0, abs=1e-12)
        assert r["ce_loss_recovered_zero"] == 1.0 and r["ce_loss_recovered_mean"] == 1.0
        assert r["ce_zero"] > r["ce_clean"] and r["kl_zero"] > 0 and r["kl_mean"] > 0
    assert exact["all"]["ce_clean"] < 0.5  # the zoo subject answers its questions
    assert exact["all"]["ce_zero"] > exact["all"]["ce_clean"] + 1.0  # zeroing the stream wrecks the answers
    assert exact["all"]["n_replaced"] == exact["text"]["n_replaced"] + exact["image"]["n_replaced"]
    assert exact["image"]["n_replaced"] == 2 * 64  # 64 image tokens per scene
    assert exact["n_records"] == 2 and exact["n_rejects"] == 0 and exact["mean_ablation"] == "per-batch mean"


def test_each_split_replaces_exactly_its_own_positions(adapter, source, recorded):
    calls = recorded[1]
    recs = [source.record(i) for i in (0, 1)]
    enc = adapter.encode([Prompt(r.images, r.text) for r in recs])
    masks = split_masks(enc.tables, enc.inputs["input_ids"].shape[1])
    modality = torch.from_numpy(np.stack([t.modality for t in enc.tables]))
    assert torch.equal(masks["image"], modality == IMAGE) and torch.equal(masks["text"], modality == TEXT)
    # one clean pass + 3 splits x (sae, zero, mean), in SPLITS order
    assert len(calls) == 10
    clean_in, clean_out = calls[0]
    assert torch.equal(clean_in, clean_out)
    for n, split in enumerate(("all", "text", "image")):
        (sae_in, sae_out), *ablations = calls[1 + 3 * n : 4 + 3 * n]
        assert torch.equal(sae_in, clean_in) and torch.equal(sae_out, clean_in)  # exact x̂ changes nothing
        for acts_in, acts_out in ablations:
            assert torch.equal(acts_in, clean_in)  # below the splice the stream is the clean one
            assert torch.equal((acts_in != acts_out).any(-1), masks[split]), split


def test_splice_fn_replaces_only_masked_positions_with_the_reconstruction():
    acts = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 1, 1]], dtype=torch.bool)
    out = splice_fn(mask, lambda x: reconstruct(ShiftSAE(4, shift=1.0), x))(acts, Site(0, 5, 0))
    torch.testing.assert_close(out[mask], acts[mask] + 1.0)
    assert torch.equal(out[~mask], acts[~mask])


def test_answer_spans_end_at_the_next_special_token(adapter):
    rec = ChatSource(1).record(0)
    enc = adapter.encode([Prompt(rec.images, rec.text)])
    ids = enc.inputs["input_ids"]
    labels, mask = next_token_targets(ids, enc.tables, adapter.tokenizer(MARKER, add_special_tokens=False)["input_ids"])
    assert adapter.tokenizer.convert_ids_to_tokens(labels[mask].tolist()) == _answer_words(0)
    _, every_text = next_token_targets(ids, enc.tables)
    assert int(every_text.sum()) == int((torch.from_numpy(enc.tables[0].modality[1:]) == TEXT).sum())


def test_store_mean_and_a_trained_shape_sae(adapter, source):
    torch.manual_seed(0)
    sae = SAE.from_config(SAEConfig(kind="topk", d_in=adapter.d_model, n_latents=256, k=8))
    mean_D = torch.zeros(adapter.d_model, dtype=torch.float64)
    out = evaluate_splice(adapter, sae, source, LAYER, [0, 1], batch_size=2, mean_D=mean_D, answer_marker=MARKER)
    r = out["all"]
    assert out["mean_ablation"] == "store mean"
    assert r["ce_mean"] == pytest.approx(r["ce_zero"], rel=1e-9)  # a zero mean is zero-ablation
    assert r["kl_sae"] > 0 and np.isfinite(r["ce_loss_recovered_zero"])
    with pytest.raises(ValueError, match="does not match the model's width"):
        evaluate_splice(adapter, ShiftSAE(64), source, LAYER, 1)
    with pytest.raises(ValueError, match="out of range"):
        evaluate_splice(adapter, ShiftSAE(adapter.d_model), source, 6, 1)


def _app():
    return command()


def _save_sae(path, d_in, layer=LAYER):
    torch.manual_seed(1)
    SAE.from_config(SAEConfig(kind="topk", d_in=d_in, n_latents=4 * d_in, k=8, hook_layer=layer)).save_pretrained(path)
    return path


def test_cli_splices_with_the_store_settings(tmp_path):
    from mmsae.store import HarvestConfig, harvest

    store = tmp_path / "store"
    harvest(HarvestConfig(out=str(store), layer=LAYER, data="world:n=3,seed=5", prompt=PROMPT, records_per_shard=3,
                          batch_size=3, progress=False, dtype="float32"))
    sae = _save_sae(tmp_path / "sae", 128)
    res = CliRunner().invoke(_app(), ["eval-sae", "--sae", str(sae), "--store", str(store), "--splice-records", "2",
                                      "--out", str(tmp_path / "eval.json")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "eval.json").read_text())
    splice = report["splice"]
    assert splice["data"] == "world:n=3,seed=5" and splice["prompt"] == PROMPT and splice["layer"] == LAYER
    assert splice["mean_ablation"] == "store mean" and splice["n_records"] == 2
    for split in ("all", "text", "image"):
        assert splice[split]["n_tokens"] > 0 and "ce_loss_recovered_mean" in splice[split]
    assert report["metrics"]["image"]["n_tokens"] == 3 * 64
    assert "recov_zero" in res.output and "fvu" in res.output
    cfg = json.loads((tmp_path / "eval.config.json").read_text())  # the resolved config beside the report
    assert cfg["config"] == "EvalSAEConfig" and cfg["splice_records"] == 2


def test_cli_needs_a_store_or_splicing(tmp_path):
    sae = _save_sae(tmp_path / "sae", 128)
    res = CliRunner().invoke(_app(), ["eval-sae", "--sae", str(sae)])
    assert res.exit_code == 2 and "give store" in res.output, res.output
    res = CliRunner().invoke(_app(), ["eval-sae", "--sae", str(tmp_path / "nope"), "--splice-records", "1"])
    assert res.exit_code == 2 and "no SAE at" in res.output, res.output


@pytest.mark.parametrize("d_in,layer_args,message", [
    (64, [], "does not match the width 128"),
    (128, ["--layer", "6"], "trained on layer 3"),
])
def test_cli_fails_before_work_on_impossible_settings(tmp_path, d_in, layer_args, message):
    sae = _save_sae(tmp_path / "sae", d_in)
    res = CliRunner().invoke(_app(), ["eval-sae", "--sae", str(sae), "--splice-records", "2", "--model",
                                      str(model_dir("subject")), "--data", "world:n=2", *layer_args])
    assert res.exit_code == 2 and message in res.output, res.output


def test_cli_layer_out_of_range_and_missing_data(tmp_path):
    sae = _save_sae(tmp_path / "sae", 128, layer=None)
    model = str(model_dir("subject"))
    res = CliRunner().invoke(_app(), ["eval-sae", "--sae", str(sae), "--splice-records", "2", "--model", model,
                                      "--data", "world:n=2", "--layer", "9"])
    assert res.exit_code == 2 and "out of range" in res.output, res.output
    res = CliRunner().invoke(_app(), ["eval-sae", "--sae", str(sae), "--splice-records", "2", "--model", model,
                                      "--layer", "1"])
    assert res.exit_code == 2 and "no data to splice on" in res.output, res.output


def test_settings_come_from_the_store_then_the_options(tmp_path):
    from mmsae.evals.splice_setup import resolve_splice_settings

    subject = str(model_dir("subject"))
    manifest = {"model": {"path": subject}, "layer": LAYER, "mean": [0.5] * 128,
                "settings": {"data": "world:n=9,seed=4", "prompt": PROMPT, "max_image_pixels": 1000}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    cfg = SAEConfig(kind="topk", d_in=128, n_latents=256, k=4)
    s = resolve_splice_settings(cfg, tmp_path)
    assert (s.model, s.data, s.prompt, s.layer, s.max_image_pixels) == (subject, "world:n=9,seed=4", PROMPT, LAYER, 1000)
    assert s.mean_D == [0.5] * 128
    other = resolve_splice_settings(cfg, tmp_path, data="world:n=2", layer=2)
    assert other.prompt is None and other.layer == 2 and other.mean_D is None  # another layer: not the store's mean
    assert resolve_splice_settings(cfg, tmp_path, prompt="<image>").prompt == "<image>"
