"""The steering playground's endpoints through the app: steering side by side, a no-op that changes nothing,
attribution shares and heatmap, the launch token, and bad input answered with the value and the valid range."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from view_helpers import SCRIPT, TOKEN

H = {"x-mmsae-token": TOKEN}
PROMPT = "<image> what colour is the star"


def steer(client, headers=H, **fields):
    data = {"sample": "1:0", "prompt": PROMPT, "features": "3", "mode": "add", "value": "8", "tokens": "all",
            "max_new_tokens": "6", **fields}
    return client.post("/api/steer", headers=headers, data={k: v for k, v in data.items() if v is not None})


def attribute(client, headers=H, **fields):
    data = {"sample": "1:0", "prompt": PROMPT, "target": "red", "baseline": "blue", **fields}
    return client.post("/api/attribute", headers=headers, data={k: v for k, v in data.items() if v is not None})


def test_steering_shows_both_answers_and_a_strong_add_changes_the_steered_one(client):
    r = steer(client)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["layer"] == 3 and body["image"] == "/record/1/0.png"
    assert body["interventions"] == [{"op": "add", "feature": 3, "scale": 8.0, "tokens": "all"}]
    for side in ("unsteered", "steered"):
        tokens = body[side]["tokens"]
        words = [t["text"] for t in tokens if not t["special"]]
        assert 1 <= len(tokens) <= 6 and " ".join(words) == body[side]["text"]
        assert [t["prefix"] for t in tokens[:2]] == ["", tokens[0]["text"]]
    assert body["unsteered"]["text"] != body["steered"]["text"] and not body["identical"]


@pytest.mark.parametrize("mode, value", [("add", "0"), ("scale", "1")])
def test_a_no_op_gives_identical_answers(client, mode, value):
    body = steer(client, mode=mode, value=value, features="3, 5, 7", max_new_tokens="8").json()
    assert body["identical"] and body["unsteered"] == body["steered"]
    assert [i["feature"] for i in body["interventions"]] == [3, 5, 7]


def test_the_unsteered_answer_is_the_model_alone_and_text_only_prompts_work(client, app):
    from mmsae.models import Prompt
    from mmsae.steer import generate

    body = steer(client, sample="", prompt="what colour is the star", tokens="text", mode="clamp", value="20").json()
    assert body["image"] is None
    with app.state.runner.loaded() as (adapter, sae):
        alone = generate(adapter, sae, 3, [Prompt([], "what colour is the star")], [], max_new_tokens=6)[0]
    assert body["unsteered"]["text"] == alone


def test_attribution_gives_shares_top_features_and_a_heatmap(client, app):
    from PIL import Image

    r = attribute(client)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["metric"] == "logit_diff" and body["read_token"] == "star"
    shares = body["modality_share"]
    assert set(shares) == {"text", "image", "special", "error"} and abs(sum(shares.values()) - 1) < 1e-6
    assert shares["text"] > 0 and shares["image"] > 0
    features = body["features"]
    sizes = [abs(f["attribution"]) for f in features]
    assert len(features) == 12 and sizes == sorted(sizes, reverse=True)
    named = {f["feature"]: f["explanation"] for f in features}
    assert -1 in named and named[-1] is None  # the error term, which has no page
    assert named[5] == "a diagonal line" and named[7] == SCRIPT  # labels from the index
    head, data = body["heatmap"].split(",", 1)
    assert head == "data:image/png;base64"
    heat = Image.open(io.BytesIO(base64.b64decode(data)))
    original = app.state.view.record_image(1, 0)
    assert heat.format == "PNG" and heat.size == original.size
    assert np.abs(np.asarray(heat.convert("RGB"), float) - np.asarray(original, float)).mean() > 1  # painted


def test_attribution_without_a_baseline_is_the_log_prob_and_a_prefix_moves_the_read_out(client):
    body = attribute(client, baseline="", sample="", prompt="what colour is the star").json()
    assert body["metric"] == "logprob" and body["value"] < 0 and body["heatmap"] is None
    moved = attribute(client, baseline="", sample="", prompt="what colour is the star", prefix="red circle").json()
    assert moved["read_token"] == "circle" and moved["prompt"] == "what colour is the star red circle"


def test_the_model_endpoints_need_the_launch_token(client):
    for call in (steer, attribute):
        for headers in ({}, {"x-mmsae-token": "wrong-token-0000"}):
            r = call(client, headers=headers)
            assert r.status_code == 403 and "launch token" in r.json()["error"]


def test_a_cross_origin_request_is_refused_even_with_the_token(client):
    for call in (steer, attribute):
        r = call(client, headers={**H, "origin": "http://evil.example"})
        assert r.status_code == 400 and "invalid origin" in r.json()["error"]


@pytest.mark.parametrize("fields, message", [
    (dict(features="99"), "feature 99 is out of range: the SAE has 16 latents, valid features are 0..15"),
    (dict(features="-2"), "feature -2 is out of range: valid features are >= 0"),
    (dict(features="three"), "features must be feature ids separated by commas (e.g. '3, 7' or '3-5'), got 'three'"),
    (dict(features=""), "features is empty"),
    (dict(features="0,1,2,3,4,5,6,7,8"), "features names 9 features; the playground steers at most 8 at once"),
    (dict(features="0-20"), "the range '0-20' names more than 8 features"),
    (dict(max_new_tokens="65"), "max_new_tokens must be in 1..64, got 65"),
    (dict(max_new_tokens="0"), "max_new_tokens must be in 1..64, got 0"),
    (dict(mode="wiggle"), "mode must be one of clamp, add, scale, got 'wiggle'"),
    (dict(tokens="some"), "tokens must be one of image, text, prompt, generated, all, got 'some'"),
    (dict(value="nan"), "value must be a finite number, got 'nan'"),
    (dict(value="lots"), "value must be a number, got 'lots'"),
    (dict(value="1e9"), "value must be in -10000..10000, got 1e+09"),
    (dict(sample="", prompt="what colour", tokens="image"), "tokens='image' selects no token of the batch "
                                                           "(it has 0 image and 2 text tokens)"),
    (dict(sample="99:0"), "image 0 of record 99 is not in the index"),
    (dict(sample="", prompt="<image>"), "prompt is empty"),
])
def test_bad_steering_input_is_a_clear_error(client, fields, message):
    r = steer(client, **fields)
    assert r.status_code in (400, 404) and message in r.json()["error"], r.text
    assert "Traceback" not in r.text


@pytest.mark.parametrize("fields, message", [
    (dict(target=""), "target is required"),
    (dict(target="red blue"), "target 'red blue' is not exactly one token"),
    (dict(baseline="red"), "baseline and target are the same token"),
    (dict(target="x" * 101), "target must be one token, got 101 characters"),
])
def test_bad_attribution_input_is_a_clear_error(client, fields, message):
    r = attribute(client, **fields)
    assert r.status_code == 400 and message in r.json()["error"], r.text


def test_the_playground_page_is_linked_and_prefilled(client):
    page = client.get("/steer?feature=5&mode=clamp&value=2.5&tokens=image").text
    assert 'value="5"' in page and 'value="2.5"' in page
    assert '<option value="clamp" selected>' in page and '<option value="image" selected>' in page
    assert 'href="/steer"' in client.get("/").text
    feature = client.get("/feature/3").text
    assert 'id="steer-link" href="/steer?feature=3&amp;mode=clamp&amp;value=' in feature
    hostile = client.get('/steer?feature="><script>x</script>').text
    assert "<script>x</script>" not in hostile and "&#34;&gt;&lt;script&gt;" in hostile


def test_the_playground_says_when_no_model_can_run(index_dir, tmp_path):
    from starlette.testclient import TestClient

    from mmsae.view.app import ViewConfig, build_app

    app = build_app(ViewConfig(index=str(index_dir), model=str(tmp_path / "gone"), sae=str(tmp_path / "gone"),
                               token=TOKEN))
    with TestClient(app, base_url="http://localhost") as c:
        assert "The model cannot run" in c.get("/steer").text
        for call in (steer, attribute):
            r = call(c)
            assert r.status_code == 503 and "does not exist" in r.json()["error"]
