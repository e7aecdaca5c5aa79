"""The pages as served: the list with search, sorts and filters, the feature page's parts, images rendered
on the original pixels by id, the image page running the tiny model + SAE, and the job bound."""

import asyncio
import io

import numpy as np
import pytest
from view_helpers import TOKEN, png_bytes
from PIL import Image

from mmsae.view.model import Busy, JobGate


def ids(client, **params):
    return [r["feature"] for r in client.get("/", params={"format": "json", **params}).json()["features"]]


def test_list_search_sort_filter_and_pages(client):
    assert ids(client, sort="feature") == [3, 5, 6, 7, 9]  # dead latents are left out
    assert ids(client, q="red", sort="feature") == [3, 7] and ids(client, q="RED", sort="feature", dir="desc") == [7, 3]
    assert ids(client, q="diagonal LINE") == [5] and ids(client, q="#6") == [6] and ids(client, q="9") == [9]
    assert ids(client, q="no such words") == []
    assert ids(client, sort="iou") == [3, 7, 5, 6, 9]  # unscored last
    assert ids(client, sort="text_share")[0] == 9
    assert ids(client, sort="crossmodal") == [3, 7, 5, 6, 9]  # SAE-V weight; null and missing last
    assert ids(client, status="uninterpretable") == [6] and ids(client, status="unexplained", sort="feature") == [9]
    assert ids(client, concept="colour", sort="feature") == [3, 7]
    first = client.get("/", params={"format": "json", "per_page": 2, "sort": "feature"}).json()
    second = client.get("/", params={"format": "json", "per_page": 2, "sort": "feature", "page": 3}).json()
    assert (first["total"], first["n_pages"]) == (5, 3) and [r["feature"] for r in second["features"]] == [9]
    html = client.get("/", params={"q": "red"}).text
    assert 'href="/feature/3"' in html and "red objects" in html and "2 of 16 features" in html


def test_feature_page_shows_every_part(client):
    html = client.get("/feature/3").text
    assert "Feature #3" in html and "red objects" in html and "zoo-explainer" in html and "zoo-v1" in html
    assert html.count('class="example"') == 3 and "/img/3/0/heatmap.png" in html
    assert "iou_random_images 0.05" in html and "clip_random 0.22" in html  # scores beside their baselines
    assert '<svg id="histogram"' in html and html.count("<rect") == 20
    assert "<mark" in html and ">red</mark> circle" in html  # the firing token highlighted
    assert "#" in html.split('id="neighbours"')[1][:400]  # decoder-cosine neighbours from the SAE
    assert "cross-modal weight" in html and "0.42" in html.split('id="crossmodal"')[1][:400]
    assert "none (1 text, 25 image tokens in its top)" in client.get("/feature/5").text
    assert "unable to interpret" in client.get("/feature/6").text
    assert "no top images" in client.get("/feature/9").text
    assert "feature 12345 is not in the index" in client.get("/feature/12345").text


def test_images_are_the_original_with_the_activations_painted_on(client, app):
    from mmsae.viz import heatmap_overlay, masked_image

    view = app.state.view
    with view.cursor() as con:
        from mmsae.index import feature_examples

        ex = feature_examples(con, 5)[0]
    original = view.original(ex)
    get = lambda v: Image.open(io.BytesIO(client.get(f"/img/5/0/{v}.png").content))  # noqa: E731
    assert np.array_equal(np.asarray(get("plain")), np.asarray(original.convert("RGB")))
    assert np.array_equal(np.asarray(get("masked")), np.asarray(masked_image(original, ex.box, ex.acts)))
    assert np.array_equal(np.asarray(get("heatmap")),
                          np.asarray(heatmap_overlay(original, ex.box, ex.acts, alpha=0.55, vmax=2.0)))
    assert get("plain").size == (64, 64)
    masked = np.asarray(get("masked"))
    assert masked[0:8, 8:16].sum() == 0 and masked[0:8, 0:8].sum() > 0  # only the diagonal patches are kept
    assert client.get("/record/4/0.png").content == client.get("/img/5/0/plain.png").content


def test_image_page_runs_the_model_on_an_indexed_image_and_an_upload(client):
    client.get(f"/image?token={TOKEN}")  # the start-up URL keeps the token in a cookie
    assert "run" in client.get("/image").text and "world-0-1" in client.get("/image").text
    r = client.post("/api/analyze", data={"sample": "1:0", "prompt": "<image> a red circle"})
    assert r.status_code == 200, r.text
    body = r.json()
    patches = [t for t in body["tokens"] if t["modality"] == "image"]
    assert len(patches) == 16 and body["image"] == "/record/1/0.png" and body["layer"] == 3
    assert all(len(t["box"]) == 4 for t in patches) and patches[5]["box"][2] > patches[5]["box"][0]
    assert any(t["features"] for t in body["tokens"])
    assert all(0 <= f < 16 and v > 0 for t in body["tokens"] for f, v in t["features"])
    r = client.post("/api/analyze", files={"image": ("a.jpg", png_bytes((50, 40), fmt="JPEG"), "image/jpeg")},
                    data={"prompt": "<image>"})
    assert r.status_code == 200, r.text
    assert r.json()["image"].startswith("data:image/png;base64,") and r.json()["width"] == 50
    client.cookies.clear()


def test_model_jobs_are_bounded():
    gate = JobGate(max_jobs=1, max_queue=1)
    import threading
    import time

    started = threading.Event()

    def slow():
        started.set()
        time.sleep(0.3)
        return 1

    async def main():
        a = asyncio.create_task(gate.run(slow))
        b = asyncio.create_task(gate.run(slow))
        await asyncio.sleep(0.05)
        with pytest.raises(Busy, match="busy"):
            await gate.run(slow)
        return await a + await b

    assert asyncio.run(main()) == 2 and gate.waiting == 0


def test_the_image_page_says_when_no_model_can_run(index_dir, tmp_path):
    from starlette.testclient import TestClient

    from mmsae.view.app import ViewConfig, build_app

    app = build_app(ViewConfig(index=str(index_dir), model=str(tmp_path / "gone"), sae=str(tmp_path / "gone"),
                               token=TOKEN))
    with TestClient(app, base_url="http://localhost") as c:
        assert "The model cannot run" in c.get("/image").text
        r = c.post("/api/analyze", headers={"x-mmsae-token": TOKEN}, data={"sample": "1:0"})
        assert r.status_code == 503 and "does not exist" in r.json()["error"]
        assert "start the viewer with --sae" in c.get("/feature/3").text


def test_run_view_serves_and_prints_the_url_with_the_token(index_dir):
    import subprocess
    import sys

    import httpx

    code = ("from mmsae.view.app import ViewConfig, run_view; "
            f"run_view(ViewConfig(index={str(index_dir)!r}, port=0, token={TOKEN!r}))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("mmsae view: http://localhost:") and line.strip().endswith(f"/?token={TOKEN}"), line
        url = line.split(": ", 1)[1].strip()
        r = httpx.get(url, follow_redirects=False, timeout=30)
        assert r.status_code == 303 and "mmsae_token" in r.headers["set-cookie"]
        assert httpx.get(url.split("?")[0] + "feature/3", timeout=30).status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_remote_bind_warns(index_dir, monkeypatch, capsys):
    import uvicorn

    from mmsae.view.app import ViewConfig, run_view

    monkeypatch.setattr(uvicorn.Server, "run", lambda self: None)  # no socket on the network in a test
    run_view(ViewConfig(index=str(index_dir), host="0.0.0.0", allow_remote=True, allowed_hosts=("myhost",)))
    assert "warning: binding 0.0.0.0" in capsys.readouterr().err


def test_the_index_is_opened_read_only_and_left_unchanged(client, app, index_dir):
    import hashlib

    import duckdb

    before = hashlib.sha256((index_dir / "index.duckdb").read_bytes()).hexdigest()
    for path in ("/", "/feature/3", "/img/3/0/masked.png", "/?q=red&sort=iou"):
        assert client.get(path).status_code == 200
    with app.state.view.cursor() as con, pytest.raises(duckdb.Error, match="read-only"):
        con.execute("DELETE FROM features")
    assert hashlib.sha256((index_dir / "index.duckdb").read_bytes()).hexdigest() == before
