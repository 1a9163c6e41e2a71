"""Headless Chromium opens the Images dashboard that `tbviz board` serves for the demo log."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
from _cli_support import DEMO_EPOCHS, Board
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

pytestmark = pytest.mark.backend_independent  # not about the Keras backend: runs once (conftest.py)

# Found on PATH, as .ci/run looks for them (`command -v`) before it installs Debian's
# chromium and chromium-driver: whatever .ci/run accepts, the test uses.
BROWSER = "chromium"
DRIVER = "chromedriver"

# The Images dashboard is Polymer: cards (tf-image-loader) and their sliders
# (paper-slider) live in nested shadow roots, out of reach of plain CSS selectors.
FIND_CARDS = r"""
function* deep(root) {
  for (const el of root.querySelectorAll('*')) {
    yield el;
    if (el.shadowRoot) yield* deep(el.shadowRoot);
  }
}
return [...deep(document)].filter(el => el.tagName === 'TF-IMAGE-LOADER').map(card => {
  const inside = card.shadowRoot ? [...deep(card.shadowRoot)] : [];
  const slider = inside.find(el => el.tagName === 'PAPER-SLIDER');
  const image = inside.find(el => el.tagName === 'IMG');
  const box = slider ? slider.getBoundingClientRect() : null;
  return {
    run: card.run, tag: card.tag, sample: card.sample,
    text: [card.shadowRoot, ...inside.map(el => el.shadowRoot)]
      .filter(root => root).map(root => root.textContent).join(' ').replace(/\s+/g, ' '),
    slider: slider ? {max: slider.max, value: slider.value, width: box.width, height: box.height} : null,
    imageWidth: image ? image.naturalWidth : 0,
  };
});
"""


def test_images_dashboard_shows_a_tbviz_card_with_its_step_slider(demo_log, tmp_path, monkeypatch):
    """A feature_maps card renders its picture with a step slider over every logged epoch."""
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not fetch anything
    logdir, _ = demo_log
    board = Board(logdir)
    browser = None
    try:
        board.wait_for("data/plugin/images/tags", lambda v: "activations" in v)
        profile = tmp_path / "chromium-profile"  # a fresh profile for every run
        profile.mkdir()
        browser = chromium(profile)
        browser.get(board.url + "#images")
        deadline = time.monotonic() + 90
        while True:
            cards = browser.execute_script(FIND_CARDS)
            ready = [
                c for c in cards
                if c["run"] == "activations" and c["tag"].startswith("feature_maps/")
                and c["slider"] and c["slider"]["width"] > 0 and c["imageWidth"] > 0
            ]  # fmt: skip
            if ready or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert ready, f"no rendered feature_maps card with a slider; cards: {cards}"
        card = ready[0]
        assert f"tag: {card['tag']}" in card["text"]  # what the card says on screen
        assert f"step {DEMO_EPOCHS - 1}" in card["text"]
        assert card["slider"]["max"] == DEMO_EPOCHS - 1
        assert card["slider"]["value"] == DEMO_EPOCHS - 1  # the latest epoch is shown
        screenshot = tmp_path / "tensorboard.png"
        assert browser.save_screenshot(str(screenshot))
    finally:
        if browser is not None:
            browser.quit()
        board.stop()
    with Image.open(screenshot) as image:
        assert image.format == "PNG"
        assert image.width >= 1000 and image.height >= 600
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 20, "the screenshot is (nearly) blank"
    # TensorBoard's orange header bar is there: the dashboard rendered, not an error page
    assert (np.abs(pixels[10, :, :].astype(int) - (245, 124, 0)).sum(axis=1) < 60).mean() > 0.5


def on_path(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name!r} is not on PATH; .ci/run installs it (chromium, chromium-driver)"
    return path


def chromium(profile) -> webdriver.Chrome:
    """Headless Chromium through the chromedriver on PATH; nothing is downloaded."""
    options = webdriver.ChromeOptions()
    options.binary_location = on_path(BROWSER)
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--window-size=1280,900", f"--user-data-dir={profile}",
    ):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(on_path(DRIVER)), options=options)
