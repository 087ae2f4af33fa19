"""The demo page at /: its files over plain HTTP, then the page itself in real headless Chromium
against the real server (draw with the mouse, upload a file, the API key field).

The browser tests need Debian's chromium (`apt-get install chromium`; CI installs it) driven by the
`playwright` package; they skip, saying so, where either is missing. MNIST_TEST_CHROMIUM points them at
another Chromium binary.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from training.data import MnistArrays

from .harness import RunningServer, start_server
from .images import paper_photo, png

try:
    from playwright.sync_api import Browser, Page, Response, sync_playwright
except ImportError:
    sync_playwright = None

CHROMIUM = Path(os.environ.get("MNIST_TEST_CHROMIUM", "/usr/bin/chromium"))
STATIC = Path(__file__).resolve().parents[2] / "service" / "http" / "static"
KEY = "demo-s3cret"

needs_chromium = pytest.mark.skipif(
    sync_playwright is None or not CHROMIUM.is_file(),
    reason=f"needs the playwright package and Chromium at {CHROMIUM} (Debian: apt-get install chromium; "
    "or set MNIST_TEST_CHROMIUM); CI installs both",
)

Stroke = list[tuple[float, float]]  # points as fractions of the pad's width and height
# Shapes the committed model recognises with near certainty once drawn with the pad's pen.
DIGITS: dict[int, list[Stroke]] = {
    1: [[(0.5, 0.15), (0.5, 0.85)]],
    7: [[(0.25, 0.2), (0.75, 0.2), (0.45, 0.85)]],
    0: [
        [
            (0.5 + 0.22 * math.sin(2 * math.pi * t / 40), 0.5 - 0.32 * math.cos(2 * math.pi * t / 40))
            for t in range(41)
        ]
    ],
    4: [[(0.55, 0.15), (0.25, 0.6), (0.75, 0.6)], [(0.6, 0.35), (0.6, 0.85)]],
}


# --- the files, over plain HTTP -----------------------------------------------------------------------


def test_page_is_served_at_root_without_a_key_and_revalidated(server: RunningServer) -> None:
    page = server.request("GET", "/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache" and "etag" in page.headers
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert server.request("HEAD", "/").status == 200
    assert "/" not in server.request("GET", "/openapi.json").json()["paths"]


def test_every_file_the_page_references_is_served_from_here(server: RunningServer) -> None:
    html = (STATIC / "index.html").read_text()
    referenced = re.findall(r'(?:src|href)="([^"]+)"', html)
    for module in STATIC.glob("*.js"):
        referenced += ["static/" + name for name in re.findall(r'from "\./([^"]+)"', module.read_text())]
    assert "static/app.js" in referenced and "static/pad.js" in referenced
    for url in referenced:
        if url.startswith("data:"):
            continue
        assert "//" not in url, f"{url}: the page must not load anything from other hosts"
        reply = server.request("GET", "/" + url)
        assert reply.status == 200, url
        assert reply.headers["cache-control"] == "no-cache"
    assert server.request("GET", "/static/missing.js").json() == {"error": "Not Found"}


# --- the page, in Chromium ------------------------------------------------------------------------------


class DemoPage:
    """One browser tab on the demo page, recording every request it makes and every script error."""

    def __init__(self, page: Page, server: RunningServer) -> None:
        self.page = page
        self.requests: list[str] = []
        self.script_errors: list[str] = []
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("pageerror", lambda error: self.script_errors.append(str(error)))
        opened = page.goto(f"http://127.0.0.1:{server.port}/")
        assert opened is not None and opened.status == 200

    def answer_to(self, act: Callable[[], object]) -> Response:
        """Do ``act`` and wait until the page shows the answer of the /predict call it caused."""
        with self.page.expect_response(lambda r: urlsplit(r.url).path == "/predict") as reply:
            act()
        self.page.wait_for_selector("#result[data-state=done], #result[data-state=error]")
        return reply.value

    def draw(self, strokes: list[Stroke]) -> Response:
        box = self.page.locator("#pad").bounding_box()
        assert box is not None
        mouse = self.page.mouse
        reply = None
        for stroke in strokes:
            points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
            mouse.move(*points[0])
            mouse.down()
            for point in points[1:]:
                mouse.move(*point, steps=8)
            reply = self.answer_to(mouse.up)  # the page predicts after every stroke
        assert reply is not None
        return reply

    def upload(self, path: Path) -> Response:
        return self.answer_to(lambda: self.page.set_input_files("#upload", path))

    def digit(self) -> str:
        return self.page.inner_text("#digit")

    def error(self) -> str:
        return self.page.inner_text("#error")

    def seen_pixels(self) -> np.ndarray:
        """The 28x28 preview as drawn on the page (its red channel; the preview is gray)."""
        rgba = self.page.evaluate(
            "() => Array.from(document.querySelector('#seen').getContext('2d')"
            ".getImageData(0, 0, 28, 28).data)"
        )
        return np.array(rgba, np.uint8).reshape(28, 28, 4)[:, :, 0]

    def foreign_requests(self) -> list[str]:
        return [url for url in self.requests if urlsplit(url).hostname not in ("127.0.0.1", None)]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert sync_playwright is not None
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield launched
        launched.close()


@pytest.fixture
def open_demo(browser: Browser) -> Iterator[Callable[[RunningServer], DemoPage]]:
    """Open the page on a server in a fresh browser context (its own storage, so no remembered key)."""
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    yield lambda server: DemoPage(context.new_page(), server)
    context.close()


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("keyed"), env={"MNIST_API_KEY": KEY})
    yield running
    assert running.stop() == 0, running.log()


@needs_chromium
@pytest.mark.parametrize("digit", list(DIGITS))
def test_a_digit_drawn_with_the_mouse_is_recognised(
    server: RunningServer, open_demo, digit: int, tmp_path: Path
) -> None:
    demo = open_demo(server)
    reply = demo.draw(DIGITS[digit])
    assert reply.status == 200
    (prediction,) = reply.json()["predictions"]
    assert demo.digit() == str(digit) == str(prediction["digit"])
    assert re.fullmatch(r"\d+\.\d% sure", demo.page.inner_text("#confidence"))
    bars = demo.page.locator("#bars li")
    assert bars.count() == 10
    assert demo.page.locator("#bars li.chosen").get_attribute("data-digit") == str(digit)
    shown = [float(bars.nth(i).get_attribute("data-probability") or "nan") for i in range(10)]
    np.testing.assert_allclose(shown, prediction["probabilities"])
    # The preview is exactly the image the server says the model saw, and it holds a digit.
    seen = demo.seen_pixels()
    assert np.array_equal(seen, np.array(prediction["pixels"], np.uint8)) and seen.max() > 200
    screenshot = tmp_path / f"demo-drawn-{digit}.png"
    demo.page.screenshot(path=screenshot, full_page=True)
    print(f"screenshot: {screenshot}")
    assert demo.foreign_requests() == [] and demo.script_errors == []


@needs_chromium
def test_an_uploaded_photo_is_recognised(
    server: RunningServer, open_demo, mnist: MnistArrays, tmp_path: Path
) -> None:
    # A dark-on-light, off-centre "scan" of a real test digit: the preview shows the preprocessing.
    image, label = mnist.test_images[0].numpy(), int(mnist.test_labels[0])
    photo = tmp_path / f"scan-of-a-{label}.png"
    photo.write_bytes(png(paper_photo(image)))
    demo = open_demo(server)
    reply = demo.upload(photo)
    assert reply.status == 200
    assert demo.digit() == str(label)
    assert np.array_equal(demo.seen_pixels(), np.array(reply.json()["predictions"][0]["pixels"], np.uint8))
    screenshot = tmp_path / "demo-uploaded.png"
    demo.page.screenshot(path=screenshot, full_page=True)
    print(f"screenshot: {screenshot}")
    # A stroke after an upload starts a new drawing instead of scribbling over the photo.
    assert demo.draw(DIGITS[1]).status == 200 and demo.digit() == "1"
    assert demo.foreign_requests() == [] and demo.script_errors == []


@needs_chromium
def test_the_api_key_field_unlocks_a_protected_server(keyed_server: RunningServer, open_demo) -> None:
    demo = open_demo(keyed_server)
    refused = demo.draw(DIGITS[7])
    assert refused.status == 401 and "x-api-key" not in refused.request.headers
    assert demo.page.get_attribute("#result", "data-state") == "error"
    assert "401" in demo.error() and "API key" in demo.error() and demo.digit() == "–"
    # Entering the key sends the same drawing again, now with the key.
    demo.page.fill("#api-key", KEY)
    accepted = demo.answer_to(lambda: demo.page.press("#api-key", "Enter"))
    assert accepted.status == 200 and accepted.request.headers["x-api-key"] == KEY
    assert demo.digit() == "7" and demo.page.is_hidden("#error")
    # The key is remembered in this browser, so a reload needs no retyping.
    demo.page.reload()
    assert demo.page.input_value("#api-key") == KEY
    assert demo.draw(DIGITS[1]).status == 200 and demo.digit() == "1"
    assert demo.foreign_requests() == [] and demo.script_errors == []
