"""The page in a real browser: headless Debian Chromium (driven by Playwright) against a running `blip serve`.

It uploads an image, captions it, asks a question, matches texts and opens a token's heat map, checks what the
page shows against the API's own answers, checks the page fetched nothing from outside the server, and saves a
screenshot (to $BLIP_SERVE_SCREENSHOT when set: that is how docs/serve.png is made).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageDraw

CHROMIUM = os.environ.get("BLIP_CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["a red square on the left", "a blue circle"]


def scene(path: Path) -> Path:
    """A synthetic-world-like picture: a red square on the left, a blue circle on the right, on grey."""
    im = Image.new("RGB", (320, 240), (128, 128, 128))
    draw = ImageDraw.Draw(im)
    draw.rectangle((30, 70, 130, 170), fill=(220, 30, 30))
    draw.ellipse((190, 60, 300, 170), fill=(30, 70, 225))
    im.save(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(hf_models, tmp_path_factory):
    """`blip serve` in its own process, as a user starts it; yields its base URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = [
        sys.executable,
        "-m",
        "blip",
        "serve",
        "--model",
        str(hf_models["caption"][1]),
        "--vqa-model",
        str(hf_models["vqa"][1]),
        "--match-model",
        str(hf_models["retrieval"][1]),
        "--port",
        str(port),
    ]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # model loading takes a few seconds on a busy machine
            if proc.poll() is not None:
                raise AssertionError(f"blip serve exited: {log.read_text()}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise AssertionError(f"blip serve did not answer: {log.read_text()}")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_page_in_chromium(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    image = scene(tmp_path / "scene.png")
    data = image.read_bytes()
    files = {"image": ("scene.png", data, "image/png")}
    api = httpx.Client(base_url=server, timeout=120)
    want_caption = api.post(
        "/api/caption", files=files, data={"num_beams": 3, "min_length": 5, "max_length": 20, "num_captions": 1}
    ).json()["captions"][0]
    want_answer = api.post("/api/ask", files=files, data={"question": "what colour is the square?"}).json()
    want_match = api.post("/api/match", files=files, data={"text": TEXTS}).json()["results"]
    want_token = api.post(
        "/api/gradcam", files=files, data={"text": TEXTS[0], "layer": want_match[0]["gradcam"]["layer"]}
    ).json()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        requested: list[str] = []
        page.on("request", lambda r: requested.append(r.url))
        page.goto(server)
        expect(page.locator("#status")).to_contain_text("ready: caption, ask, match", timeout=30_000)
        page.set_input_files("#file", str(image))
        expect(page.locator("#caption-btn")).to_be_enabled()

        page.click("#caption-btn")
        expect(page.locator("#captions .caption-text")).to_have_text([want_caption["text"]], timeout=60_000)

        page.fill("#question", "what colour is the square?")
        page.click("#ask-btn")
        expect(page.locator("#answer")).to_have_text(want_answer["answer"], timeout=60_000)

        page.fill("#texts", "\n".join(TEXTS))
        page.click("#match-btn")
        rows = page.locator("#match-results tbody tr")
        expect(rows).to_have_count(len(TEXTS), timeout=60_000)
        for i, want in enumerate(want_match):
            expect(rows.nth(i).locator("td").first).to_have_text(want["text"])
            expect(rows.nth(i).locator(".itm")).to_have_text(f"{want['itm']:.4f}")
            expect(rows.nth(i).locator(".itc")).to_have_text(f"{want['itc']:.4f}")
        assert page.get_attribute("#heat", "src") == want_match[0]["gradcam"]["overlay"]

        tokens = page.locator("#heat-tokens button")
        expect(tokens).to_have_text(["all tokens", *want_token["tokens"]])
        tokens.nth(2).click()  # the second word's own map
        expect(page.locator("#heat")).to_have_attribute("src", want_token["token_overlays"][1], timeout=60_000)
        tokens.nth(0).click()  # back to the mean over tokens, for the screenshot
        expect(page.locator("#error")).to_have_text("")

        shot = Path(os.environ.get("BLIP_SERVE_SCREENSHOT", tmp_path / "serve.png"))
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert Image.open(shot).size[0] == 1200
    outside = [u for u in requested if not u.startswith((server, "data:", "blob:"))]
    assert outside == []  # no CDN, no fonts, nothing but the server itself
