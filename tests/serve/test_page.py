"""The chat page in a real headless Chromium (the system's, driven by Playwright): it loads, streams a
reply, its stop button ends a reply mid-way, and it drops the oldest turns when the context is full."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.serve.conftest import MODEL, backend, serving

sync_api = pytest.importorskip("playwright.sync_api", reason="the test extra's playwright is not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# where the lead wants a picture of the page (kept out of the repository); only written if its folder exists
SCREENSHOT = Path(os.environ.get("TINYLM_SCREENSHOT", "/work/wt/serve-screenshot.png"))
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (apt-get install chromium)")


@pytest.fixture
def page():
    with tempfile.TemporaryDirectory() as profile, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=FLAGS,
                                                        viewport={"width": 900, "height": 640})  # fmt: skip
        try:
            yield browser.new_page()
        finally:
            browser.close()


def test_page_streams_a_reply_and_stops_one(ckpt: Path, page) -> None:
    with serving(backend(ckpt, delay=0.03)) as url:  # a few seconds a reply: time to watch it and stop it
        page.goto(url + "/")
        sync_api.expect(page.locator("#model")).to_contain_text(f"{MODEL} · context 96")
        page.fill("#max-tokens", "8")  # a short first reply leaves the second room in the 96-token context
        page.fill("#input", "Hello there")
        page.click("#send")
        reply = page.locator(".msg.assistant").last
        sync_api.expect(reply).to_have_class("msg assistant streaming")  # the cursor shows while it streams
        sync_api.expect(reply).not_to_have_text("")  # text arrives before the reply ends
        sync_api.expect(reply).to_have_class("msg assistant", timeout=30_000)  # ... and then it ends
        assert page.locator(".msg.user").inner_text() == "Hello there"
        sync_api.expect(page.locator("#speed")).to_contain_text("tokens/s")

        page.fill("#max-tokens", "60")
        page.fill("#input", "Tell me more")
        page.click("#send")
        second = page.locator(".msg.assistant").last
        sync_api.expect(second).not_to_have_text("")
        page.click("#stop")
        sync_api.expect(page.locator(".note")).to_have_text("stopped")
        sync_api.expect(page.locator("#send")).to_be_visible()
        stopped_at = second.inner_text()
        page.wait_for_timeout(500)  # nothing more arrives once stopped
        assert second.inner_text() == stopped_at and len(stopped_at) < 60
        assert page.locator(".msg.user").count() == 2

        page.fill("#input", "And what happened after that, in the end?")  # past the context of 96 with the rest
        page.click("#send")
        sync_api.expect(page.locator(".note").last).to_have_text("dropped the oldest turn to fit the model's context")
        sync_api.expect(page.locator(".msg.assistant").last).to_have_class("msg assistant", timeout=30_000)
        assert page.locator(".error").count() == 0
        if SCREENSHOT.parent.is_dir():
            page.screenshot(path=str(SCREENSHOT))
