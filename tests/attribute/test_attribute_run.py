"""`mmsae attribute` (Parquet, config, heatmap, the printed summary) and the bad-input errors of the API."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from attribute_helpers import LAYER, make_sae, prompts
from click.testing import CliRunner
from PIL import Image

from mmsae.attribute import attribute
from mmsae.attribute.run import PARQUET_COLUMNS, AttributeConfig, run_attribute
from mmsae.cli import command


@pytest.fixture(scope="module")
def files(tmp_path_factory, adapter_of, tiny_dir):
    root = tmp_path_factory.mktemp("attr")
    make_sae(adapter_of("llava").d_model).save_pretrained(root / "sae")
    make_sae(16, hook_layer=LAYER).save_pretrained(root / "narrow")
    make_sae(adapter_of("llava").d_model, hook_layer=None).save_pretrained(root / "nolayer")
    Image.new("RGB", (40, 30), "red").save(root / "red.png")
    return root, str(tiny_dir("llava"))


def _cli(args):
    return CliRunner().invoke(command(), ["attribute", *args])


def test_cli_writes_the_parquet_its_config_and_a_heatmap(files):
    root, model = files
    out = root / "run" / "attr.parquet"
    res = _cli(["--model", model, "--sae", str(root / "sae"), "--prompt", "<image> what colour is the star",
                "--image", str(root / "red.png"), "--target", "red", "--baseline", "blue", "--out", str(out),
                "--heatmap", str(root / "run" / "heat.png"), "--exact-top", "3", "--top", "5"])
    assert res.exit_code == 0, res.output
    table = pq.read_table(out)
    assert tuple(table.column_names) == PARQUET_COLUMNS
    t = table.to_pydict()
    assert set(t["modality"]) == {"text", "image", "special"}
    assert -1 in t["feature"] and np.isfinite(np.asarray(t["exact_effect"])).sum() >= 3
    summary = json.loads(res.stdout[res.stdout.index("{"):])
    assert summary["layer"] == LAYER and summary["metric"] == "logit_diff" and len(summary["top"]) == 5
    assert sum(summary["modality_share"].values()) == pytest.approx(1.0)
    assert summary["rows"] == table.num_rows
    assert sum(r["exact_effect"] is not None for r in summary["top"]) >= 2
    pic = Image.open(root / "run" / "heat.png")
    assert pic.format == "PNG" and pic.size == (40, 30)
    cfg = json.loads((root / "run" / "attr.config.json").read_text())
    assert cfg["config"] == "AttributeConfig" and cfg["target"] == "red"


def test_run_attribute_defaults_to_logprob_without_a_baseline_and_matches_the_api(files, adapter_of):
    root, model = files
    out = root / "lp.parquet"
    summary = run_attribute(AttributeConfig(sae=str(root / "sae"), prompt="what colour is the star", target="red",
                                            out=str(out), model=model, position=2))
    a = adapter_of("llava")
    from mmsae.models import Prompt
    from mmsae.sae import SAE

    attr = attribute(a, SAE.from_pretrained(root / "sae"), LAYER, a.encode([Prompt([], "what colour is the star")]),
                     "red", metric="logprob", position=2)
    assert summary["metric"] == "logprob" and summary["position"] == 2
    assert summary["value"] == pytest.approx(float(attr.metric[0]), abs=1e-5)
    np.testing.assert_allclose(pq.read_table(out).column("attribution").to_numpy(), attr.attribution_R, atol=1e-6)


@pytest.mark.parametrize("args,message", [
    (["--target", "red blue"], "is not exactly one token: it tokenises as ['red', 'blue']"),
    (["--metric", "kl"], "kl"),
    (["--layer", "9"], "valid layers are 0..3"),
    (["--position", "40"], "valid positions are -6..5"),
    (["--sae", "narrow"], "d_in=16 but the model's residual stream has d_model=32"),
    (["--sae", "nolayer"], "layer is required"),
    (["--sae", "missing"], "no SAE checkpoint"),
    (["--metric", "logit_diff"], "needs a baseline"),
    (["--heatmap", "x.png"], "heatmap needs an image"),
    (["--out", "x.csv"], "out must be a .parquet file"),
    (["--exact-top", "-1"], "exact_top must be >= 0"),
])
def test_cli_bad_input_is_an_error_naming_the_value(files, args, message):
    root, model = files
    base = {"--model": model, "--sae": str(root / "sae"), "--prompt": "what colour is the star", "--target": "red",
            "--out": str(root / "bad.parquet")}
    given = dict(zip(args[::2], args[1::2]))
    if given.get("--sae") in ("narrow", "nolayer", "missing"):
        given["--sae"] = str(root / given["--sae"])
    res = _cli([w for kv in {**base, **given}.items() for w in kv])
    assert res.exit_code == 2, res.output
    assert message in res.output, res.output
    assert not (root / "bad.parquet").exists()


def test_api_bad_input(adapter_of):
    a = adapter_of("llava")
    sae = make_sae(a.d_model)
    enc = a.encode(prompts(2))
    V = a.text_config().vocab_size
    cases = [
        (dict(target="red blue", baseline="blue"), r"target 'red blue' is not exactly one token"),
        (dict(target=V, baseline="blue"), rf"target id {V} is out of range: the vocabulary has ids 0\.\.{V - 1}"),
        (dict(target="red"), "needs a baseline"),
        (dict(target="red", baseline="blue", metric="kl"), "metric must be one of logit_diff, logprob, got 'kl'"),
        (dict(target="red", baseline="blue", metric="logprob"), "reads no baseline"),
        (dict(target=["red"], baseline="blue"), "target has 1 entries for a batch of 2"),
        (dict(target="red", baseline=["blue", "red"]), "example 1: baseline and target are the same token"),
        (dict(target="red", baseline="blue", position=[0, 99]), r"position 99 is out of range for example 1"),
        (dict(target="red", baseline="blue", exact_top=-2), "exact_top must be an integer >= 0"),
        (dict(target="red", baseline="blue", ig_steps=1.5), "ig_steps must be an integer >= 0"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            attribute(a, sae, LAYER, enc, **kwargs)
    with pytest.raises(ValueError, match="valid layers are 0..3"):
        attribute(a, sae, 4, enc, "red", "blue")
    with pytest.raises(ValueError, match="d_in=16"):
        attribute(a, make_sae(16), LAYER, enc, "red", "blue")
    attr = attribute(a, sae, LAYER, enc, "red", "blue")
    with pytest.raises(ValueError, match=r"example must be in 0\.\.1"):
        attr.per_position(5)
