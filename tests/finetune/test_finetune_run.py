"""run_finetune end to end on the zoo subject: rejects, refusal of a used --out, LoRA merge, kill -9 resume."""

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmsae.finetune import FinetuneConfig, run_finetune
from mmsae.models import Prompt, load_adapter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kill_helper import sigkill_once  # noqa: E402


def _cfg(instruct, out, **kw):
    kw = {"batch": 2, "lr": 3e-4, "progress": False, **kw}
    return FinetuneConfig(data=f"jsonl:{instruct / 'instruct.jsonl'}", out=str(out), **kw)


def _weights(d: Path) -> dict:
    return {k: v for f in sorted(d.glob("*.safetensors")) for k, v in load_file(f).items()}


def test_full_finetune_writes_a_checkpoint_and_rejects(instruct, tmp_path):
    out = tmp_path / "ft"
    res = run_finetune(_cfg(instruct, out, steps=3, grad_accum=2))
    assert res["records"] == 12 and res["rejects"] == 2 and res["steps"] == 3
    reasons = {r["id"]: r["reason"] for r in map(json.loads, (out / "rejects.jsonl").read_text().splitlines())}
    assert "no assistant turn" in reasons["no-answer"] and "placeholders" in reasons["two-placeholders"]
    adapter = load_adapter(res["model_dir"])
    enc = adapter.encode([Prompt([], "<s> user : what is the background ? assistant :")])
    assert adapter.generate(enc.inputs, max_new_tokens=2).shape[1] >= 1
    with pytest.raises(ValueError, match="already holds a run"):
        run_finetune(_cfg(instruct, out, steps=3, grad_accum=2))
    with pytest.raises(ValueError, match="differs in steps"):
        run_finetune(_cfg(instruct, out, steps=4, grad_accum=2, resume=True))
    assert run_finetune(_cfg(instruct, out, steps=3, grad_accum=2, resume=True))["model_dir"] == res["model_dir"]
    run_finetune(_cfg(instruct, out, steps=1, overwrite=True))


def test_lora_merged_checkpoint_differs_from_base_only_where_lora_was(instruct, tmp_path):
    from mmsae.defaults import zoo_model_dir

    res = run_finetune(_cfg(instruct, tmp_path / "lora", steps=2, lora_r=2, lr=1e-2))
    assert (Path(res["adapter_dir"]) / "adapter_config.json").exists()
    base, merged = _weights(zoo_model_dir("subject")), _weights(Path(res["model_dir"]))
    assert base.keys() == merged.keys()
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed and all(k.split(".")[-2] in ("q_proj", "k_proj", "v_proj", "o_proj") for k in changed)


CHILD = ("import sys; from mmsae.finetune import FinetuneConfig, run_finetune; "
         "run_finetune(FinetuneConfig(data=sys.argv[1], out=sys.argv[2], steps=10, batch=2, grad_accum=2, "
         "lr=3e-4, save_every=2, progress=False, resume=True))")


@pytest.mark.slow
def test_resume_after_kill_reaches_the_same_weights(instruct, tmp_path):
    data = f"jsonl:{instruct / 'instruct.jsonl'}"
    kw = dict(steps=10, grad_accum=2, save_every=2, resume=True)
    ref = run_finetune(_cfg(instruct, tmp_path / "ref", **kw))
    run = tmp_path / "run"
    sigkill_once(["-c", CHILD, data, str(run)], lambda: (run / ".resume" / "state.pt").exists())
    assert not (run / "summary.json").exists()
    res = run_finetune(_cfg(instruct, run, **kw))
    assert res["resumed_from"] >= 2
    a, b = _weights(Path(ref["model_dir"])), _weights(Path(res["model_dir"]))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_another_family_with_the_world_template(instruct, tmp_path):
    """Qwen2-VL (tiny, no chat template of its own): the world's <image> becomes its vision placeholder."""
    from mmsae.models.tiny import build_qwen2_vl

    path = build_qwen2_vl(tmp_path / "qwen")
    res = run_finetune(_cfg(instruct, tmp_path / "ft", model=str(path), steps=2, lora_r=2, chat_template="world"))
    assert res["records"] == 12 and res["rejects"] == 2
    assert load_adapter(res["model_dir"]).n_layers == load_adapter(path).n_layers
    with pytest.raises(ValueError, match="no chat template"):
        run_finetune(_cfg(instruct, tmp_path / "ft2", model=str(path), steps=1))
