"""Headless Chromium opens the ACTIVATIONS tab of plain `tensorboard --logdir` on a real log.

With ``TBVIZ_SCREENSHOT=1`` it also trains the 20-epoch demo and saves the
README's screenshot to ``docs/dashboard.png``.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from _cli_support import DEMO_EPOCHS, DEMO_LAYERS, run_tbviz, write_log
from _tensorboard_support import Server
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tbviz.plugin import PLUGIN_NAME

pytestmark = pytest.mark.backend_independent  # not about the Keras backend: runs once (conftest.py)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"  # Debian's chromium-driver, installed by .ci/run
HOSTILE = "<img src=x onerror=alert(1)>"
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "dashboard.png"

# The state of the page, read in one go: what each view shows and whether its pictures loaded.
PAGE = """
const images = (selector) => [...document.querySelectorAll(selector)].map((img) => ({
  layer: img.dataset.layer, step: img.dataset.step, src: img.getAttribute('src'),
  loaded: img.complete && img.naturalWidth > 0, hidden: img.hidden}));
const slider = document.querySelector('#epoch-slider');
return {
  grid: images('#grid img'),
  columns: [...document.querySelectorAll('#grid thead th')].slice(1).map((th) => th.textContent),
  slider: slider ? Number(slider.value) : null,
  sliderImages: images('#slider-list img'),
  differences: images('#compare img.difference'),
  explanation: document.querySelector('#compare-explanation')?.textContent ?? '',
  heat: [...document.querySelectorAll('#heatmap .heat-cell')].map((cell) => ({
    layer: cell.dataset.layer, step: cell.dataset.step, coloured: cell.style.background !== ''})),
  layerNames: [...document.querySelectorAll('th.layer, figcaption')].map((node) => node.textContent),
  notices: [...document.querySelectorAll('#notices li')].map((node) => node.textContent),
  injected: document.querySelectorAll('img[src="x"]').length,
};
"""


def test_activations_tab_grid_slider_play_compare_and_heat_map(demo_log, tmp_path, monkeypatch):
    """In the tab: a loaded picture per layer and epoch, one slider for all, play, compare, heat map.

    With ``TBVIZ_SCREENSHOT=1`` the log is a fresh 20-epoch ``tbviz demo`` and
    the grid is saved to ``docs/dashboard.png`` (the README's picture).
    """
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not fetch anything
    screenshot = os.environ.get("TBVIZ_SCREENSHOT") == "1"
    demo, epochs = demo_log[0], DEMO_EPOCHS
    if screenshot:
        demo, epochs = tmp_path / "mnist", 20
        process = run_tbviz("demo", "--logdir", str(demo), "--epochs", str(epochs),
                            "--source", "shipped", timeout=900)  # fmt: skip
        assert process.returncode == 0, process.stderr[-3000:]
    logdir = tmp_path / "logs"
    shutil.copytree(demo / "activations", logdir / "mnist" / "activations")
    damaged = write_log(logdir / "z_hostile" / "activations", {HOSTILE: (12, 8)}, range(3))
    with open(damaged, "r+b") as file:  # the last record (epoch 2) cut short: a crashed writer
        file.truncate(os.path.getsize(damaged) - 10)
    layers = len(DEMO_LAYERS)
    server = Server(logdir, "--load_fast=false")
    browser = None
    try:
        browser = chromium(tmp_path / "profile", size="1400,1000" if screenshot else "1280,900")
        open_tab(browser, server.url)
        page = wait(browser, lambda p: p["columns"] and len(p["grid"]) == layers * len(p["columns"])
                    and all(i["loaded"] for i in p["grid"]), "the grid's pictures")  # fmt: skip
        columns = [int(text.removeprefix("epoch ")) for text in page["columns"]]
        assert columns[0] == 0 and columns[-1] == epochs - 1
        if epochs == DEMO_EPOCHS:
            assert columns == list(range(epochs))  # every epoch a column
        assert {(i["layer"], int(i["step"])) for i in page["grid"]} == {
            (layer, step) for layer in DEMO_LAYERS for step in columns
        }
        assert page["notices"] == []
        if screenshot:
            time.sleep(1)  # let the last pictures paint
            browser.switch_to.default_content()
            assert browser.save_screenshot(str(SCREENSHOT))
            browser.switch_to.frame(find_frame(browser))

        # The probe image is a selector; the layer list can be filtered.
        browser.execute_script(
            "const s = document.querySelector('#probe'); s.value = '1'; s.dispatchEvent(new Event('change'))"
        )
        browser.find_element(By.ID, "filter").send_keys("conv")
        page = wait(browser, lambda p: {i["layer"] for i in p["grid"]} == {"conv1", "conv2"}
                    and all("sample=1" in i["src"] and i["loaded"] for i in p["grid"]), "probe 1, conv only")  # fmt: skip
        browser.find_element(By.ID, "filter").clear()
        browser.execute_script("const f = document.querySelector('#filter'); f.dispatchEvent(new Event('input'))")

        click_view(browser, "slider")
        page = wait(browser, lambda p: len(p["sliderImages"]) == layers and all(i["loaded"] for i in p["sliderImages"]),
                    "the slider view's pictures")  # fmt: skip
        assert page["slider"] == epochs - 1  # the latest epoch first
        before = {i["layer"]: i["src"] for i in page["sliderImages"]}
        browser.find_element(By.ID, "epoch-slider").send_keys(Keys.HOME)
        page = wait(browser, lambda p: p["slider"] == 0 and all(i["loaded"] and i["step"] == "0" for i in p["sliderImages"]),
                    "every layer at epoch 0")  # fmt: skip
        after = {i["layer"]: i["src"] for i in page["sliderImages"]}
        assert set(after) == set(DEMO_LAYERS)
        assert all(after[layer] != before[layer] for layer in DEMO_LAYERS), "one slider moves every layer"
        browser.find_element(By.ID, "play").click()
        wait(browser, lambda p: p["slider"] == 1 and all(i["step"] == "1" for i in p["sliderImages"]), "play")

        click_view(browser, "compare")
        page = wait(browser, lambda p: len(p["differences"]) == layers and all(i["loaded"] for i in p["differences"]),
                    "the difference pictures")  # fmt: skip
        assert "B − A of the normalised pictures" in page["explanation"]
        assert "where the pattern changed" in page["explanation"]

        click_view(browser, "change")
        page = wait(browser, lambda p: len(p["heat"]) == layers * epochs, "the heat map")
        coloured = {(c["layer"], int(c["step"])) for c in page["heat"] if c["coloured"]}
        assert coloured == {(layer, step) for layer in DEMO_LAYERS for step in range(1, epochs)}
        if screenshot:
            browser.switch_to.default_content()
            assert browser.save_screenshot(str(SCREENSHOT.with_name("dashboard_change.png")))
            browser.switch_to.frame(find_frame(browser))

        # A layer named like HTML is shown as text, nothing is injected; the damage is noticed.
        select = browser.find_element(By.ID, "run")
        browser.execute_script(
            "arguments[0].value = 'z_hostile/activations'; arguments[0].dispatchEvent(new Event('change'))",
            select,
        )
        click_view(browser, "grid")
        page = wait(browser, lambda p: HOSTILE in p["layerNames"] and p["grid"]
                    and all(i["loaded"] for i in p["grid"]), "the hostile run")  # fmt: skip
        assert page["injected"] == 0
        assert [int(i["step"]) for i in page["grid"]] == [0, 1]
        (notice,) = page["notices"]
        assert notice.startswith("z_hostile/activations: Skipped while reading:") and "ends inside a record" in notice

        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors
    finally:
        if browser is not None:
            browser.quit()
        server.close()


def chromium(profile, size: str = "1280,900") -> webdriver.Chrome:
    """Headless Debian Chromium through the system chromedriver; nothing is downloaded."""
    profile.mkdir(exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--window-size={size}", f"--user-data-dir={profile}",
    ):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def open_tab(browser: webdriver.Chrome, url: str) -> None:
    """Opens TensorBoard at the ACTIVATIONS tab and enters the plugin's iframe."""
    browser.get(f"{url}/#{PLUGIN_NAME}")
    browser.switch_to.frame(find_frame(browser))


def find_frame(browser: webdriver.Chrome):
    deadline = time.monotonic() + 90
    while True:
        frame = browser.execute_script(FIND_FRAME)
        if frame is not None:
            return frame
        assert time.monotonic() < deadline, "TensorBoard showed no iframe for the ACTIVATIONS tab"
        time.sleep(0.25)


# TensorBoard's app may put the plugin's iframe inside shadow roots.
FIND_FRAME = """
function* deep(root) {
  for (const el of root.querySelectorAll('*')) {
    yield el;
    if (el.shadowRoot) yield* deep(el.shadowRoot);
  }
}
return [...deep(document)].find((el) => el.tagName === 'IFRAME'
  && (el.getAttribute('src') || '').includes('plugin_entry.html?name=activations')) || null;
"""


def click_view(browser: webdriver.Chrome, view: str) -> None:
    browser.find_element(By.CSS_SELECTOR, f"button[data-view='{view}']").click()


def wait(browser: webdriver.Chrome, ready, what: str, timeout: float = 60) -> dict:
    """Reads the page until ``ready(page)``; fails naming `what` and the last state seen."""
    deadline = time.monotonic() + timeout
    while True:
        page = browser.execute_script(PAGE)
        if ready(page):
            return page
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never showed; last state: {page!r}")
        time.sleep(0.25)
