"""The HTTP path against a real server process-in-thread: serve-explainer, the client, cache and failures."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from mmsae.explain import HTTPExplainer, HTTPExplainerConfig, LocalExplainer, PromptTemplate, explain
from mmsae.explain.server import make_server
from mmsae.world import World
from mmsae.zoo import build


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llava")
    tok = build.build_tokenizer()
    model, processor = build.build_llava(build.TowerSpec(patch_size=16, hidden=32, layers=1, heads=2),
                                         build.DecoderSpec(hidden=32, layers=1, heads=2, intermediate=64), tok)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _serve(server):
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/v1"


def test_serve_explainer_answers_like_the_local_backend(tiny_llava, tmp_path):
    server = make_server(tiny_llava, port=0, name="tiny")
    url = _serve(server)
    try:
        template = PromptTemplate.load("zoo-v1")
        sets = [[World()[i].pil for i in range(k, k + 3)] for k in (0, 5)]
        client = HTTPExplainer(HTTPExplainerConfig(url, "tiny", cache_dir=tmp_path / "cache", max_concurrency=2, max_tokens=16))
        remote = explain([1, 2], sets, client, template)
        local = explain([1, 2], sets, LocalExplainer(tiny_llava, max_tokens=16), template)
        assert [r.raw for r in remote] == [r.raw for r in local]
        assert all(r.prompt_version == "zoo-v1" and r.model == "tiny" for r in remote)
        # a rerun is served from the cache: the server is gone and nothing fails
        server.shutdown()
        again = client.complete_many([template.messages(s) for s in sets])
        assert all(c.cached for c in again)
        assert [c.text for c in again] == [r.raw for r in remote]
    finally:
        server.shutdown()
        server.server_close()


def test_bad_requests_get_openai_style_errors(tiny_llava):
    server = make_server(tiny_llava, port=0, name="tiny")
    url = _serve(server)
    try:
        client = HTTPExplainer(HTTPExplainerConfig(url, "tiny", retries=0))
        bad_image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://example.com/x.png"}}]}]
        out = client.complete_many([bad_image])
        assert out[0].text is None and "HTTP 400" in out[0].error and "data:image" in out[0].error
        wrong_model = HTTPExplainer(HTTPExplainerConfig(url, "other", retries=0)).complete_many([bad_image])
        assert "HTTP 404" in wrong_model[0].error
    finally:
        server.shutdown()
        server.server_close()


def test_retries_then_success_and_unreachable_is_recorded(monkeypatch):
    calls = {"n": 0}

    class Flaky(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            calls["n"] += 1
            self.rfile.read(int(self.headers["Content-Length"]))
            assert self.headers.get("Authorization") == "Bearer sekret"
            code, body = (503, {"error": {"message": "busy"}}) if calls["n"] < 3 else \
                (200, {"choices": [{"message": {"content": "Unable to interpret"}}]})
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    monkeypatch.setenv("MY_KEY", "sekret")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    url = _serve(server)
    try:
        c = HTTPExplainer(HTTPExplainerConfig(url, "m", api_key_env="MY_KEY", retries=3, backoff_s=0.01))
        res = explain([7], [[Image.new("RGB", (8, 8))]], c, PromptTemplate.load("paper-v1"))
        assert calls["n"] == 3
        assert res[0].status == "uninterpretable"
    finally:
        server.shutdown()
        server.server_close()
    dead = HTTPExplainer(HTTPExplainerConfig(url, "m", retries=1, backoff_s=0.01, timeout_s=2))
    res = explain([8], [[Image.new("RGB", (8, 8))]], dead, PromptTemplate.load("paper-v1"))
    assert res[0].status == "failed" and res[0].explanation is None and "Connect" in res[0].reason
    assert "sekret" not in res[0].reason


def test_unknown_template():
    with pytest.raises(ValueError, match="unknown prompt template 'v9'"):
        PromptTemplate.load("v9")
