"""`mmsae harvest` end to end: bad inputs are rejected with reasons, bad settings fail early."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mmsae.cli import command


def _app():
    return command()


def _folder(root):
    root.mkdir()
    rng = np.random.default_rng(0)
    good = rng.integers(0, 255, (40, 50, 3), np.uint8)
    Image.fromarray(good).save(root / "a_good.png")
    Image.fromarray(good).convert("CMYK").save(root / "b_cmyk.jpg")
    Image.fromarray(good).convert("P").save(root / "c_palette.png")
    Image.fromarray(np.dstack([good, np.full((40, 50), 128, np.uint8)])).save(root / "d_rgba.png")
    Image.fromarray((rng.integers(0, 65535, (30, 30))).astype(np.uint16)).save(root / "e_16bit.png")
    (root / "f_empty.png").write_bytes(b"")
    (root / "g_garbage.jpg").write_bytes(b"this is not an image at all")
    buf = (root / "a_good.png").read_bytes()
    (root / "h_truncated.png").write_bytes(buf[: len(buf) // 2])
    Image.new("RGB", (3000, 3000)).save(root / "i_huge.png")
    return root


def test_harvest_folder_with_bad_images(llava_dir, tmp_path):
    data = _folder(tmp_path / "imgs")
    out = tmp_path / "store"
    res = CliRunner().invoke(_app(), ["harvest", "--model", str(llava_dir), "--layer", "1", "--data", str(data),
                                      "--out", str(out), "--max-image-pixels", "4000000", "--no-progress",
                                      "--batch-size", "3"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "manifest.json").read_text())
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    reasons = {r["id"]: r["reason"] for r in rejects}
    assert set(reasons) == {"f_empty.png", "g_garbage.jpg", "h_truncated.png", "i_huge.png"}
    assert "zero-byte" in reasons["f_empty.png"] and "huge" in reasons["i_huge.png"]
    assert "truncated" in reasons["h_truncated.png"] and "not a readable image" in reasons["g_garbage.jpg"]
    assert m["n_samples"] == 5 and m["n_rejects"] == 4
    assert m["counts"]["rows"]["image"] == 5 * 16
    assert m["created_by"]["command"] and m["data"]["kind"] == "folder"
    cfg = json.loads((out / "config.json").read_text())  # the resolved config, the model's default filled in
    assert cfg["config"] == "HarvestConfig" and cfg["layer"] == 1 and cfg["batch_size"] == 3
    assert "rows (d_in" in res.stdout and "4 rejected" in res.stdout


@pytest.mark.parametrize("args,message", [
    (["--layer", "4"], "out of range"),
    (["--layer", "-1"], "out of range"),
    (["--layer", "0", "--tokens", "nope"], "tokens must be"),
])
def test_bad_settings_fail_before_any_work(llava_dir, tmp_path, args, message):
    out = tmp_path / "never"
    res = CliRunner().invoke(_app(), ["harvest", "--model", str(llava_dir), "--data", "world:n=2",
                                      "--out", str(out), *args])
    assert res.exit_code == 2 and message in res.output.replace("\n", " ")
    assert not out.exists()


def test_model_without_adapter_fails_early(tmp_path):
    model = tmp_path / "bert"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "bert", "num_hidden_layers": 2}))
    res = CliRunner().invoke(_app(), ["harvest", "--model", str(model), "--layer", "0", "--data", "world:n=2",
                                      "--out", str(tmp_path / "never")])
    assert res.exit_code == 2 and "no adapter" in res.output
    assert not (tmp_path / "never").exists()


def test_harvest_jsonl_conversations_with_text_rows_and_rejects(llava_dir, tmp_path):
    Image.new("RGB", (40, 30), "red").save(tmp_path / "r.png")
    lines = [
        json.dumps({"id": "a", "image": "r.png", "conversations": [
            {"from": "human", "value": "<image>\nwhat colour"}, {"from": "gpt", "value": "red"}]}),
        "{broken",
        json.dumps({"id": "b", "conversations": [{"from": "human", "value": "what shape is the star"}]}),
        json.dumps({"id": "c", "image": "r.png", "conversations": [
            {"from": "human", "value": "<image> <image> two placeholders, one image"}]}),
        json.dumps({"id": "d", "image": "r.png", "conversations": [
            {"from": "human", "value": "<image> " + "red " * 40}]}),
    ]
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "store"
    res = CliRunner().invoke(_app(), ["harvest", "--model", str(llava_dir), "--layer", "0", "--data",
                                      str(tmp_path / "d.jsonl"), "--out", str(out), "--tokens", "text",
                                      "--max-seq-len", "40", "--no-progress"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "manifest.json").read_text())
    reasons = {r["id"]: r["reason"] for r in map(json.loads, (out / "rejects.jsonl").read_text().splitlines())}
    assert set(reasons) == {"d.jsonl:1", "c", "d"}
    assert "malformed JSON" in reasons["d.jsonl:1"] and "placeholders" in reasons["c"]
    assert "max_seq_len" in reasons["d"]
    assert m["n_samples"] == 2 and m["counts"]["rows"] == {"text": 3 + 5, "image": 0, "special": 0}
    assert m["counts"]["tokens"]["image"] == 16


def test_harvest_is_registered_on_the_mmsae_app():
    res = CliRunner().invoke(command(), ["harvest", "--help"])
    assert res.exit_code == 0 and "--layer" in res.output and "--data" in res.output
    missing = CliRunner().invoke(command(), ["harvest", "--out", "x"])
    assert missing.exit_code == 2 and "--layer" in missing.output  # the layer is required, as before


def test_missing_data_fails_before_any_work(llava_dir, tmp_path):
    res = CliRunner().invoke(_app(), ["harvest", "--model", str(llava_dir), "--layer", "0", "--data",
                                      str(tmp_path / "nowhere"), "--out", str(tmp_path / "never")])
    assert res.exit_code == 2 and "does not exist" in " ".join(res.output.split())
    assert not (tmp_path / "never").exists()
