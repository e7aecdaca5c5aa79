"""Every guard of the viewer: traversal by any spelling, foreign Host and Origin headers, a script in an
explanation, the model endpoint without the token, oversized, malformed and bomb uploads, the non-loopback
bind, and errors that never show a traceback."""

import io
import os

import pytest
from view_helpers import SCRIPT, TOKEN, png_bytes

from mmsae.view.app import ViewConfig, launch_url
from mmsae.view.security import UploadError, decode_upload, host_name

TRAVERSALS = [
    "/static/../app.py", "/static/..%2fapp.py", "/static/%2e%2e%2fapp.py", "/static/%252e%252e%252fapp.py",
    "/static//etc/passwd", "/static/%2fetc%2fpasswd", "/static/view.js%00.png", "/static/templates",
    "/img/../../etc/passwd", "/img/3/0/..%2f..%2fetc%2fpasswd.png", "/img/3/0/%2e%2e.png",
    "/img/-1/0/plain.png", "/img/3/99/plain.png", "/img/3/0/evil.png", "/record/..%2f1/0.png",
    "/record/1/0/../../index.duckdb", "/index.duckdb", "/etc/passwd", "/feature/3/../../../etc/passwd",
    "/record/999/0.png", "/static/link.js",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_paths_from_the_request_never_reach_the_disk(client, path):
    r = client.get(path)
    assert r.status_code == 404, (path, r.status_code)
    assert "root:" not in r.text and "import" not in r.text and "Traceback" not in r.text


def test_a_symlink_beside_the_index_or_assets_is_not_served(client, index_dir, tmp_path):
    (index_dir / "link.png").symlink_to("/etc/passwd")
    try:
        for path in ("/link.png", "/static/link.png", "/record/link.png", "/img/link.png"):
            assert client.get(path).status_code == 404
    finally:
        (index_dir / "link.png").unlink()


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8765", "127.0.0.1.evil.example", "10.0.0.1",
                                  "localhost.evil", "", "[::2]:8765"])
def test_a_foreign_host_header_is_refused(client, host):
    r = client.get("/", headers={"host": host})
    assert r.status_code == 400 and "invalid host" in r.text
    r = client.post("/api/analyze", headers={"host": host, "x-mmsae-token": TOKEN})
    assert r.status_code == 400 and "invalid host" in r.json()["error"]


@pytest.mark.parametrize("host", ["localhost", "localhost:8765", "127.0.0.1:1", "[::1]:8765", "LOCALHOST"])
def test_loopback_host_headers_are_served(client, host):
    assert client.get("/", headers={"host": host}).status_code == 200


def test_a_cross_origin_post_is_refused_even_with_the_token(client):
    r = client.post("/api/analyze", headers={"origin": "http://evil.example", "x-mmsae-token": TOKEN},
                    data={"sample": "1:0"})
    assert r.status_code == 400 and "invalid origin" in r.json()["error"]


def test_host_name_parsing():
    assert host_name("[::1]:8765") == "[::1]" and host_name("LocalHost:1") == "localhost"
    assert host_name("127.0.0.1") == "127.0.0.1"


def test_a_script_in_an_explanation_renders_as_text(client):
    for path in ("/feature/7", "/?q=script", "/?sort=feature"):
        html = client.get(path).text
        assert "<script>window.pwned" not in html
        assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;a red &#34;thing&#34; &amp; co" in html, path
    context = client.get("/feature/3").text
    assert "<b>top</b>" not in context and "&lt;b&gt;top&lt;/b&gt;" in context
    assert client.get("/?format=json&q=pwned").json()["features"][0]["explanation"] == SCRIPT


def test_every_page_sends_a_content_security_policy(client):
    csp = client.get("/feature/3").headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]


def test_the_model_endpoint_needs_the_launch_token(client):
    for headers in ({}, {"x-mmsae-token": "wrong-token-xxxxxxxx"}, {"x-mmsae-token": TOKEN[:-1]}):
        r = client.post("/api/analyze", headers=headers, data={"sample": "1:0"})
        assert r.status_code == 403 and "launch token" in r.json()["error"]
    client.cookies.set("mmsae_token", "nope")
    assert client.post("/api/analyze", data={"sample": "1:0"}).status_code == 403
    client.cookies.clear()


def test_the_start_up_url_sets_the_cookie_only_for_the_right_token(client):
    r = client.get("/?token=wrong", follow_redirects=False)
    assert r.status_code == 303 and "set-cookie" not in r.headers
    r = client.get(f"/?token={TOKEN}&q=red", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/?q=red"
    cookie = r.headers["set-cookie"]
    assert "mmsae_token=" in cookie and "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()


def test_uploads_oversized_malformed_wrong_type_or_bombs_are_refused_clearly(client, monkeypatch, app):
    h = {"x-mmsae-token": TOKEN}
    big = os.urandom(9 * 2**20)
    r = client.post("/api/analyze", headers=h, files={"image": ("big.png", big, "image/png")})
    assert r.status_code in (400, 413) and "limit" in r.json()["error"]
    r = client.post("/api/analyze", headers=h, files={"image": ("x.png", b"not an image at all", "image/png")})
    assert r.status_code == 400 and "not an image" in r.json()["error"]
    r = client.post("/api/analyze", headers=h, files={"image": ("x.png", png_bytes()[:60], "image/png")})
    assert r.status_code == 400 and "could not be decoded" in r.json()["error"]
    r = client.post("/api/analyze", headers=h, files={"image": ("x.tif", png_bytes(fmt="TIFF"), "image/tiff")})
    assert r.status_code == 400 and "TIFF is not accepted" in r.json()["error"]
    r = client.post("/api/analyze", headers=h, data={"sample": "../../etc/passwd"})
    assert r.status_code == 400 and "record:image_index" in r.json()["error"]
    r = client.post("/api/analyze", headers=h, data={"sample": "999:0"})
    assert r.status_code == 404 and "not in the index" in r.json()["error"]
    r = client.post("/api/analyze", headers=h, data={})
    assert r.status_code == 400 and "send an image" in r.json()["error"]


def test_a_decompression_bomb_is_refused_before_decoding():
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG")  # 400 Mpx that compresses to ~50 kB
    assert len(buf.getvalue()) < 2**20
    with pytest.raises(UploadError, match="limit is|too large"):
        decode_upload(buf.getvalue(), max_bytes=2**20, max_pixels=4096 * 4096)
    with pytest.raises(UploadError, match="empty"):
        decode_upload(b"", 10, 10)


def test_non_loopback_bind_is_refused_without_the_flag(index_dir, capsys):
    for host in ("0.0.0.0", "192.168.1.5", "::", "example.com"):
        with pytest.raises(ValueError, match="allow_remote"):
            ViewConfig(index=str(index_dir), host=host)
    cfg = ViewConfig(index=str(index_dir), host="0.0.0.0", allow_remote=True)
    assert cfg.host == "0.0.0.0"
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        ViewConfig(index=str(index_dir), host=host)
    assert launch_url(ViewConfig(index=str(index_dir)), 8765, "t" * 10) == "http://localhost:8765/?token=tttttttttt"


def test_config_errors_name_the_field(index_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="index"):
        ViewConfig(index=str(tmp_path / "none"))
    with pytest.raises(ValueError, match="port must be"):
        ViewConfig(index=str(index_dir), port=70000)
    with pytest.raises(ValueError, match="max_jobs must be >= 1"):
        ViewConfig(index=str(index_dir), max_jobs=0)


def test_errors_are_a_page_or_json_never_a_traceback(client, app, monkeypatch):
    r = client.get("/?sort=nope")
    assert r.status_code == 400 and "sort must be one of" in r.text and "Traceback" not in r.text
    assert client.get("/?page=x&format=json").json()["error"] == "page and per_page must be integers"
    assert client.get("/?per_page=100000").status_code == 400
    assert client.get("/api/analyze").status_code == 405
    view = app.state.view

    def crash(*a, **k):
        raise RuntimeError("secret internal detail /home/user")

    monkeypatch.setattr(view, "feature", crash)
    r = client.get("/feature/3")
    assert r.status_code == 500 and "internal error (RuntimeError)" in r.text
    assert "secret" not in r.text and "Traceback" not in r.text


def test_allowed_hosts_add_to_loopback_for_a_remote_bind(index_dir):
    from starlette.testclient import TestClient

    from mmsae.view.app import build_app

    app = build_app(ViewConfig(index=str(index_dir), host="0.0.0.0", allow_remote=True, allowed_hosts=("MyHost",)))
    with TestClient(app, base_url="http://myhost:8765") as c:
        assert c.get("/").status_code == 200
        assert c.get("/", headers={"host": "otherhost"}).status_code == 400
        assert c.get("/", headers={"host": "localhost"}).status_code == 200
