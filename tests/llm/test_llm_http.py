"""The chat plumbing against a real server in a thread: the server, the HTTP client, its cache, retries and
failures, and the local backend it must agree with."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from mmsae.llm import HTTPChat, HTTPChatConfig, LocalChat, from_data_url, image_part, make_server, to_hf_messages
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


def _chat(images, text="What is common to these images?"):
    return [{"role": "system", "content": "Answer in one word."},
            {"role": "user", "content": [image_part(im) for im in images] + [{"type": "text", "text": text}]}]


def test_server_answers_like_the_local_backend_and_the_cache_outlives_it(tiny_llava, tmp_path):
    server = make_server(tiny_llava, port=0, name="tiny")
    url = _serve(server)
    try:
        chats = [_chat([World()[i].pil for i in range(k, k + 3)]) for k in (0, 5)]
        client = HTTPChat(HTTPChatConfig(url, "tiny", cache_dir=tmp_path / "cache", max_concurrency=2, max_tokens=16))
        remote = client.complete_many(chats)
        local = LocalChat(tiny_llava, max_tokens=16).complete_many(chats)
        assert all(c.error is None and c.text is not None for c in remote)
        assert [c.text for c in remote] == [c.text for c in local]
        assert client.name == "tiny" and not any(c.cached for c in remote)
        # a rerun is served from the cache: the server is gone and nothing fails
        server.shutdown()
        again = client.complete_many(chats)
        assert all(c.cached for c in again)
        assert [c.text for c in again] == [c.text for c in remote]
    finally:
        server.shutdown()
        server.server_close()


def test_bad_requests_get_openai_style_errors(tiny_llava):
    server = make_server(tiny_llava, port=0, name="tiny")
    url = _serve(server)
    try:
        client = HTTPChat(HTTPChatConfig(url, "tiny", retries=0))
        bad_image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://example.com/x.png"}}]}]
        out = client.complete_many([bad_image])
        assert out[0].text is None and "HTTP 400" in out[0].error and "data:image" in out[0].error
        wrong_model = HTTPChat(HTTPChatConfig(url, "other", retries=0)).complete_many([bad_image])
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
        c = HTTPChat(HTTPChatConfig(url, "m", api_key_env="MY_KEY", retries=3, backoff_s=0.01))
        out = c.complete_many([_chat([Image.new("RGB", (8, 8))])])
        assert calls["n"] == 3
        assert out[0].text == "Unable to interpret" and out[0].error is None and out[0].attempts == 3
    finally:
        server.shutdown()
        server.server_close()
    dead = HTTPChat(HTTPChatConfig(url, "m", api_key_env="MY_KEY", retries=1, backoff_s=0.01, timeout_s=2))
    out = dead.complete_many([_chat([Image.new("RGB", (8, 8))])])
    assert out[0].text is None and "Connect" in out[0].error and out[0].attempts == 2
    assert "sekret" not in out[0].error


def test_messages_round_trip_images_and_refuse_bad_input():
    im = Image.new("RGB", (5, 3), (200, 10, 30))
    back = from_data_url(image_part(im)["image_url"]["url"])
    assert back.size == (5, 3) and back.getpixel((0, 0)) == (200, 10, 30)
    hf, images = to_hf_messages(_chat([im, im], "which?"))
    assert [p["type"] for p in hf[1]["content"]] == ["image", "image", "text"] and len(images) == 2
    assert hf[0]["content"] == [{"type": "text", "text": "Answer in one word."}]
    with pytest.raises(ValueError, match="only base64"):
        from_data_url("http://example.com/x.png")
    with pytest.raises(ValueError, match="non-empty list"):
        to_hf_messages([])
    with pytest.raises(ValueError, match="unsupported role 'tool'"):
        to_hf_messages([{"role": "tool", "content": "x"}])
    with pytest.raises(ValueError, match="unsupported content part 'audio'"):
        to_hf_messages([{"role": "user", "content": [{"type": "audio"}]}])
