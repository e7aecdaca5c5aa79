"""The viewer in a real headless browser (Debian's chromium driven by Playwright, no browser download): the
list, search, a feature page and its three views, the image page with an upload and a patch click, and a
script in an explanation that must not run. Screenshots go to the test's tmp dir (and to docs/screenshots/
with MMSAE_UPDATE_SCREENSHOTS=1)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from view_helpers import TOKEN, png_bytes

CHROMIUM = os.environ.get("MMSAE_CHROMIUM", "/usr/bin/chromium")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"chromium not found at {CHROMIUM} (install it: .ci/setup-browser.sh, or apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright; the browser itself comes from apt)"
    return None


pytestmark = [pytest.mark.browser, pytest.mark.skipif(_missing() is not None, reason=_missing() or "")]


@pytest.fixture(scope="module")
def server(app):
    import uvicorn

    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not (srv.started and srv.servers) and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "the viewer did not start"
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield f"http://localhost:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    # bypass_csp: Playwright's waits evaluate strings, which the viewer's CSP forbids; the script test then
    # checks the escaping alone (the CSP header has its own test)
    context = browser.new_context(viewport={"width": 1200, "height": 900}, bypass_csp=True)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, f"javascript errors: {errors}"


def shot(page, tmp_path, name):
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000
    if os.environ.get("MMSAE_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOCS / f"{name}.png")


def test_list_search_feature_page_and_views(page, server, tmp_path):
    page.goto(server + "/")
    assert page.locator("table#features tbody tr").count() == 5
    shot(page, tmp_path, "list")
    page.fill("#q", "red")
    page.click("#go")
    page.wait_for_url("**/?q=red*")
    rows = page.locator("table#features tbody tr")
    assert rows.count() == 2 and "2 of 16 features" in page.inner_text("#count")
    page.click("text=#3")
    page.wait_for_url("**/feature/3")
    assert page.inner_text("#title") == "Feature #3" and "red objects" in page.inner_text("#explanations")
    images = page.locator("img.example")
    assert images.count() == 3
    page.wait_for_function("[...document.querySelectorAll('img.example')].every(i => i.complete && i.naturalWidth == 64)")
    for view in ("masked", "plain", "heatmap"):
        page.click(f"#toggle button[data-view={view}]")
        assert page.get_attribute("img.example >> nth=0", "src") == f"/img/3/0/{view}.png"
        assert "on" in page.get_attribute(f"#toggle button[data-view={view}]", "class")
        page.wait_for_function("[...document.querySelectorAll('img.example')].every(i => i.complete && i.naturalWidth == 64)")
        if view == "masked":
            shot(page, tmp_path, "feature-masked")
    assert page.locator("#histogram rect").count() == 20
    assert page.inner_text("#contexts mark >> nth=0") == "red"
    shot(page, tmp_path, "feature")


def test_a_script_in_an_explanation_does_not_run(page, server):
    page.goto(server + "/feature/7")
    assert page.evaluate("window.pwned") is None
    assert "<script>window.pwned = 1</script>" in page.inner_text("#explanations")


def test_image_page_upload_and_click_a_patch(page, server, tmp_path):
    page.goto(server + f"/image?token={TOKEN}")  # the start-up URL: the token goes into a cookie
    assert "token=" not in page.url
    upload = tmp_path / "upload.png"
    upload.write_bytes(png_bytes((48, 48), (30, 160, 40)))
    page.set_input_files("#image-file", str(upload))
    page.click("#run")
    page.wait_for_selector("#canvas .patch")
    assert page.locator("#canvas .patch").count() == 16
    assert "tokens at layer 3" in page.inner_text("#status")
    page.click("#canvas .patch >> nth=5")
    page.wait_for_selector("#fired h3")
    assert "patch (token" in page.inner_text("#fired h3")
    fired = page.locator("#fired-list a.fired-feature")
    assert fired.count() >= 1 and fired.first.get_attribute("href").startswith("/feature/")
    page.select_option("#sample", "1:0")
    page.set_input_files("#image-file", [])
    page.click("#run")
    page.wait_for_function("document.querySelector('#analysed').getAttribute('src') == '/record/1/0.png'")
    page.wait_for_function("document.querySelector('#analysed').complete")
    page.click("#canvas .patch >> nth=9")
    page.wait_for_selector("#fired h3:has-text('token 10')")
    shot(page, tmp_path, "image")


def test_image_page_without_the_token_says_so(page, server):
    page.goto(server + "/image")
    assert "launch token" in page.inner_text("#no-token")
    page.select_option("#sample", "1:0")
    page.click("#run")
    page.wait_for_selector("#status.error")
    assert "launch token" in page.inner_text("#status")


def _steer(page, **fields):
    for name, value in fields.items():
        if name in ("mode", "tokens", "sample"):
            page.select_option(f"#{name}", value)
        else:
            page.fill(f"#{name}", value)
    page.evaluate("document.getElementById('steer-status').textContent = ''")
    page.click("#run-steer")
    page.wait_for_function("document.getElementById('steer-status').textContent.match(/^(layer|error)/)")
    return page.inner_text("#steer-status")


def test_playground_steers_side_by_side_and_attributes_a_token(page, server, tmp_path):
    page.goto(server + f"/steer?token={TOKEN}")
    page.goto(server + "/feature/5")
    page.click("#steer-link")  # "steer this feature", prefilled
    page.wait_for_url("**/steer?feature=5*")
    assert page.input_value("#features") == "5" and page.input_value("#mode") == "clamp"
    page.fill("#prompt", "<image> what colour is the star")

    status = _steer(page, features="99")
    assert "feature 99 is out of range" in status and "0..15" in status
    assert "error" in page.get_attribute("#steer-status", "class")

    _steer(page, features="5, 3", mode="add", value="0")
    assert page.locator("#out-unsteered .gen").count() >= 1
    assert page.inner_text("#out-unsteered") == page.inner_text("#out-steered")
    assert page.inner_text("#same") == "the two answers are identical"

    assert _steer(page, features="3", value="8").startswith("layer 3: add #3 8 on all")
    assert page.inner_text("#out-unsteered") != page.inner_text("#out-steered")
    assert page.inner_text("#same") == "the answers differ"

    page.click("#out-steered .gen >> nth=1")  # attribute the steered answer's second token, read there
    assert page.input_value("#target") == page.inner_text("#out-steered .gen >> nth=1")
    assert page.input_value("#prefix") == page.inner_text("#out-steered .gen >> nth=0")
    page.fill("#target", "red")
    page.fill("#baseline", "blue")
    page.fill("#prefix", "")
    page.click("#run-attr")
    page.wait_for_selector("#shares tr[data-share=image]")
    shares = {k: page.inner_text(f"#shares tr[data-share={k}] td.num") for k in ("text", "image", "special", "error")}
    assert abs(sum(float(v.rstrip("%")) for v in shares.values()) - 100) < 0.5 and shares["image"] != "0.0%"
    assert "d = logit(red) − logit(blue)" in page.inner_text("#attr-value")
    links = page.locator("#attr-features a.attr-feature")
    assert links.count() >= 5 and links.first.get_attribute("href").startswith("/feature/")
    page.wait_for_function("document.getElementById('heatmap').complete && "
                           "document.getElementById('heatmap').naturalWidth == 64")
    shot(page, tmp_path, "playground")


def test_playground_without_the_token_says_so(page, server):
    page.goto(server + "/steer?feature=3")
    assert "launch token" in page.inner_text("#no-token")
    status = _steer(page)
    assert status.startswith("error") and "launch token" in status
