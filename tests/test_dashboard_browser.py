"""Headless Chromium opens the ACTIVATIONS tab of plain `tensorboard --logdir` on real logs.

The demo's log (trained) and a 37-layer log written by tbviz's own writer, as a
practitioner reads them: pictures large enough to see, labelled from their
`LayerInfo`, epochs numbered as Keras prints them, the header, the layer column
and the slider on screen while scrolling, the enlarged view stepping through
epochs with the layer's numbers, differences on their own range with a figure.

With ``TBVIZ_SCREENSHOT=1`` it also trains the 20-epoch demo and saves the
README's screenshots, ``docs/dashboard.png`` and ``docs/dashboard_change.png``.
"""

from __future__ import annotations

import io
import os
import shutil
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from _browser_support import chromium, click_view, find_frame, open_tab, severe_errors, wait
from _cli_support import DEMO_EPOCHS, DEMO_LAYERS, run_tbviz, write_log
from _tensorboard_support import Server
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tbviz.io import png, tags
from tbviz.io.reader import RunReader, read_run
from tbviz.io.summaries import LayerRecord
from tbviz.io.tags import LayerInfo, epoch_number
from tbviz.io.writer import RunWriter

pytestmark = pytest.mark.backend_independent  # not about the Keras backend: runs once (conftest.py)

HOSTILE = "<img src=x onerror=alert(1)>"
DOCS = Path(__file__).resolve().parent.parent / "docs"
PICTURES_JS = Path(__file__).resolve().parent.parent / "tbviz" / "plugin" / "static" / "pictures.js"


def test_the_tab_reads_the_demo_large_labelled_numbered_as_keras_with_zoom_compare_and_heat_map(
    demo_log, tmp_path, monkeypatch
):
    """The demo in the tab: every picture loaded and enlarged by an integer factor (pool2 at least
    4x), rows labelled from LayerInfo with a colour bar, epochs as Keras prints them, a size
    control that enlarges and keeps focus, the enlarged view stepping epochs with the logged
    numbers, one slider and play, differences with a ramp and mean |B - A| equal to the pictures',
    a heat map with its legend whose click leaves a visible filter, hostile names as text.

    With ``TBVIZ_SCREENSHOT=1`` the log is a fresh 20-epoch ``tbviz demo`` and the grid and the
    heat map are saved to docs/ (the README's pictures).
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
    logged = read_run(str(logdir / "mnist" / "activations"))
    layers = len(DEMO_LAYERS)
    server = Server(logdir, "--load_fast=false")
    browser = None
    try:
        browser = chromium(tmp_path / "profile", size="1400,1000" if screenshot else "1280,900")
        open_tab(browser, server.url)
        page = wait(browser, lambda p: p["columns"] and len(p["grid"]) == layers * len(p["columns"])
                    and all(i["loaded"] for i in p["grid"]), "the grid's pictures")  # fmt: skip
        # Epochs as Keras prints them: step 0 is "epoch 1".
        assert page["columns"][0] == f"epoch {epoch_number(0)}" == "epoch 1"
        assert page["columns"][-1] == f"epoch {epoch_number(epochs - 1)}"
        if epochs == DEMO_EPOCHS:
            assert page["columns"] == [f"epoch {s + 1}" for s in range(epochs)]
        assert {i["layer"] for i in page["grid"]} == set(DEMO_LAYERS)
        assert page["notices"] == []
        # Pictures enlarged by whole factors, drawn pixelated; the smallest layer at least 4x.
        for image in page["grid"]:
            assert image["factor"] >= 1 and image["factor"] == int(image["factor"]), image
            assert image["width"] == image["natural"] * image["factor"] and image["rendering"] == "pixelated"
        pool2 = [i for i in page["grid"] if i["layer"] == "pool2"]
        assert all(i["width"] >= 4 * i["natural"] for i in pool2), pool2
        # Each row labelled from the LayerInfo logged beside the pictures, with a colour bar.
        for label, layer in zip(page["labels"], DEMO_LAYERS, strict=True):
            info = logged.info(layer)
            shape = "(" + ", ".join(map(str, info.output_shape)) + ")"
            for fact in (layer, info.layer_class, shape, f"{info.channels} maps",
                         f"tiled {info.grid[0]} × {info.grid[1]}", f'normalize="{info.normalize}"'):  # fmt: skip
                assert fact in label["text"], (fact, label["text"])
            assert "linear-gradient" in label["bar"]
        assert page["probes"] == [{"probe": str(p), "pressed": str(p == 0).lower(), "thumb": None, "loaded": False}
                                  for p in range(4)]  # fmt: skip
        if screenshot:
            time.sleep(1)  # let the last pictures paint
            browser.switch_to.default_content()
            assert browser.save_screenshot(str(DOCS / "dashboard.png"))
            browser.switch_to.frame(find_frame(browser))

        # The size control enlarges past the logged size, and keeps the keyboard focus.
        size = browser.find_element(By.ID, "thumb")
        before = {i["layer"]: i["width"] for i in page["grid"]}
        browser.execute_script("arguments[0].focus()", size)
        size.send_keys(Keys.END)
        page = wait(browser, lambda p: all(i["width"] > before[i["layer"]] for i in p["grid"]), "larger pictures")
        assert page["focused"] == "thumb"
        assert all(i["width"] >= 3 * i["natural"] for i in page["grid"]), "the largest layer too"
        stride = browser.find_element(By.ID, "stride")
        stride.clear()
        stride.send_keys("2", Keys.ENTER)
        page = wait(browser, lambda p: "one every 2 logged epochs" in (p["summary"] or ""), "the stride")
        assert page["focused"] == "stride"
        browser.execute_script("arguments[0].value = '0'; arguments[0].dispatchEvent(new Event('change'))", stride)
        browser.find_element(By.CSS_SELECTOR, ".controls .auto").click()  # fit the window again

        # A probe image is chosen with its button; the layer list can be filtered, visibly.
        browser.find_element(By.CSS_SELECTOR, "#probe button[data-probe='1']").click()
        page = wait(browser, lambda p: all("sample=1" in i["src"] for i in p["grid"]), "probe 1")
        assert [b["pressed"] for b in page["probes"]] == ["false", "true", "false", "false"]
        assert page["focused"] == "probe"  # the button pressed keeps the focus
        browser.find_element(By.ID, "filter").send_keys("conv")
        page = wait(browser, lambda p: {i["layer"] for i in p["grid"]} == {"conv1", "conv2"}
                    and all("sample=1" in i["src"] and i["loaded"] for i in p["grid"]), "probe 1, conv only")  # fmt: skip
        assert page["summary"].startswith("2 of 4 layers matching “conv”") and page["clearShown"]
        browser.find_element(By.ID, "filter-clear").click()
        page = wait(browser, lambda p: len({i["layer"] for i in p["grid"]}) == layers and not p["clearShown"], "every layer")

        # The enlarged view steps through the epochs, with the layer's logged numbers there.
        browser.find_element(By.CSS_SELECTOR, "#grid img[data-layer='conv2']").click()
        page = wait(browser, lambda p: p["zoom"] and p["zoom"]["loaded"] and p["zoom"]["numbers"], "the enlarged picture")
        assert page["zoom"]["caption"].startswith(f"conv2 · epoch {epoch_number(0)} (1 of ")

        def assert_numbers(zoom, step):
            for kind in ("mean", "std", "zero_fraction"):
                expected = dict(logged.scalars[tags.tag(kind, "conv2")])[step]
                assert float(zoom["numbers"][kind]) == pytest.approx(expected, rel=6e-3, abs=1e-9), kind

        assert_numbers(page["zoom"], 0)
        browser.switch_to.active_element.send_keys(Keys.ARROW_RIGHT)
        step = logged.images["feature_maps/conv2"][1].step
        page = wait(browser, lambda p: p["zoom"]["step"] == str(step) and p["zoom"]["loaded"]
                    and p["zoom"]["numbers"].get("change"), "the next epoch, enlarged")  # fmt: skip
        assert page["zoom"]["caption"].startswith(f"conv2 · epoch {epoch_number(step)} (2 of ")
        assert_numbers(page["zoom"], step)
        browser.switch_to.active_element.send_keys(Keys.ESCAPE)
        wait(browser, lambda p: p["zoom"] is None, "the enlarged view closed")

        click_view(browser, "slider")
        page = wait(browser, lambda p: len(p["sliderImages"]) == layers and all(i["loaded"] for i in p["sliderImages"]),
                    "the slider view's pictures")  # fmt: skip
        assert page["slider"] == epochs - 1  # the latest epoch first
        assert page["sliderLabel"].startswith(f"epoch {epochs} · {epochs} of {epochs} logged epochs")
        before = {i["layer"]: i["src"] for i in page["sliderImages"]}
        browser.find_element(By.ID, "epoch-slider").send_keys(Keys.HOME)
        page = wait(browser, lambda p: p["slider"] == 0 and all(i["loaded"] and i["step"] == "0" for i in p["sliderImages"]),
                    "every layer at the first epoch")  # fmt: skip
        assert page["sliderLabel"].startswith("epoch 1 · 1 of")
        after = {i["layer"]: i["src"] for i in page["sliderImages"]}
        assert set(after) == set(DEMO_LAYERS)
        assert all(after[layer] != before[layer] for layer in DEMO_LAYERS), "one slider moves every layer"
        browser.find_element(By.ID, "play").click()
        wait(browser, lambda p: p["slider"] == 1 and all(i["step"] == "1" for i in p["sliderImages"]), "play")

        click_view(browser, "compare")
        page = wait(browser, lambda p: len(p["differences"]) == layers and all(i["loaded"] for i in p["differences"]),
                    "the difference pictures")  # fmt: skip
        assert page["compareColumns"][1:3] == ["A: mnist/activations, epoch 1", f"B: mnist/activations, epoch {epochs}"]
        # One run selector: A's run is the bar's (Compare adds B's only).
        assert browser.find_elements(By.ID, "run-a") == [] and browser.find_elements(By.ID, "run-b")
        assert "B − A of the normalised pictures" in page["explanation"]
        assert "where the pattern changed" in page["explanation"]
        for image, legend in zip(page["differences"], page["differenceLegends"], strict=True):
            mean, spread = difference_figures(logged, image["layer"], 0, epochs - 1, probe=1)
            assert image["mean"] == pytest.approx(mean, rel=1e-4, abs=1e-6)
            assert image["range"] == pytest.approx(spread, rel=1e-4, abs=1e-6)
            assert "mean |B − A| = " in legend and "−" in legend and "+" in legend

        click_view(browser, "change")
        page = wait(browser, lambda p: len(p["heat"]) == layers * epochs, "the heat map")
        coloured = {(c["layer"], int(c["step"])) for c in page["heat"] if c["coloured"]}
        assert coloured == {(layer, step) for layer in DEMO_LAYERS for step in range(1, epochs)}
        assert page["heatSteps"][0] == "1"
        assert "0: no change" in page["legend"] and "no value" in page["legend"] and "log scale" in page["legend"]
        if screenshot:
            browser.switch_to.default_content()
            assert browser.save_screenshot(str(DOCS / "dashboard_change.png"))
            browser.switch_to.frame(find_frame(browser))
        browser.find_element(By.CSS_SELECTOR, "#heatmap .heat-cell[data-layer='pool1'][data-step='1']").click()
        page = wait(browser, lambda p: p["view"] == "compare" and p["differences"], "compare from the heat map")
        assert page["filter"] == "pool1" and page["clearShown"]  # the filter it set is in sight
        assert {i["layer"] for i in page["differences"]} == {"pool1"}

        # A layer named like HTML is shown as text, nothing is injected; the damage is noticed.
        select = browser.find_element(By.ID, "run")
        browser.execute_script(
            "arguments[0].value = 'z_hostile/activations'; arguments[0].dispatchEvent(new Event('change'))",
            select,
        )
        browser.find_element(By.ID, "filter-clear").click()
        click_view(browser, "grid")
        page = wait(browser, lambda p: HOSTILE in p["layerNames"] and p["grid"]
                    and all(i["loaded"] for i in p["grid"]), "the hostile run")  # fmt: skip
        assert page["injected"] == 0
        assert [int(i["step"]) for i in page["grid"]] == [0, 1]
        (notice,) = page["notices"]
        assert notice.startswith("z_hostile/activations: Skipped while reading:") and "ends inside a record" in notice
        assert severe_errors(browser) == []
    finally:
        if browser is not None:
            browser.quit()
        server.close()


def difference_figures(result, layer: str, step_a: int, step_b: int, probe: int) -> tuple[float, float]:
    """Mean |B - A| and the 99th percentile of |B - A| of two logged palette pictures, from their
    indices (index i < LEVELS is i / (LEVELS - 1)), over the pixels that are values in both."""
    pictures = {item.step: item.pngs[probe] for item in result.images[tags.tag(tags.IMAGE, layer)]}
    values = []
    for step in (step_a, step_b):
        with Image.open(io.BytesIO(pictures[step])) as image:
            values.append(np.asarray(image).astype(np.float64))
    real = (values[0] < tags.LEVELS) & (values[1] < tags.LEVELS)
    magnitudes = np.sort(np.abs(values[1] - values[0])[real] / (tags.LEVELS - 1))
    return float(magnitudes.mean()), float(magnitudes[min(len(magnitudes) - 1, int(0.99 * len(magnitudes)))])


# -------------------------------------------------------------------- a 37-layer log

BLOCKS = 35
STEPS = range(6)


def _maps_info(channels: int, cell: int, grid: tuple[int, int], normalize: str = "map") -> LayerInfo:
    return LayerInfo("Conv2D", (cell, cell, channels), "maps", channels, grid[0] * grid[1], grid,
                     (cell, cell), normalize, 1.0, "viridis", (8, 8), 3)  # fmt: skip


def _maps_picture(rng, cell: int, grid: tuple[int, int], samples: int = 3) -> np.ndarray:
    rows, cols = grid
    pictures = np.full((samples, rows * cell + rows - 1, cols * cell + cols - 1), tags.SEPARATOR_INDEX, np.uint8)
    for r in range(rows):
        for c in range(cols):
            top, left = r * (cell + 1), c * (cell + 1)
            pictures[:, top : top + cell, left : left + cell] = rng.integers(0, tags.LEVELS, (samples, cell, cell))
    return pictures


def write_big_log(log_dir: Path) -> None:
    """An RGB input, 35 conv blocks and a layer whose picture changes size and normalisation at
    step 4 (a run resumed with other settings), 6 steps, through tbviz's own writer."""
    rng = np.random.default_rng(0)
    writer = RunWriter(str(log_dir))
    viridis = png.palette("viridis")
    probe = rng.integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    probe[:, 8:24, 8:24, 0] = 255  # a red square: a colour picture
    input_info = LayerInfo("InputLayer", (32, 32, 3), "image", 3, 3, (1, 1), (32, 32), "layer",
                           0.0, "rgb", (8, 8), 3)  # fmt: skip
    for step in STEPS:
        records = [LayerRecord("image", probe, viridis, info=input_info)]
        for block in range(BLOCKS):
            records.append(LayerRecord(
                f"block{block:02d}", _maps_picture(rng, 12, (4, 4)), viridis, info=_maps_info(16, 12, (4, 4)),
                scalars={tags.MEAN: 0.1 * step + block, tags.STD: 1.0 + step},
            ))  # fmt: skip
        cell, normalize = (10, "map") if step < 4 else (12, "layer")
        records.append(LayerRecord("resized", _maps_picture(rng, cell, (2, 2)), viridis,
                                   info=_maps_info(4, cell, (2, 2), normalize)))  # fmt: skip
        writer.write_epoch(step, records)
    writer.close()


def test_on_a_big_log_the_header_layer_column_and_slider_stay_and_failures_say_why(tmp_path, monkeypatch):
    """37 layers at 1280 x 800: the epoch header and the controls stay on screen scrolling down,
    the layer column scrolling right, the slider in the slider view; the RGB input is the
    first row and the probe buttons' thumbnails; a picture the server cannot read shows its
    message, pictures of different sizes say so instead of a difference; an unreadable run
    is a notice, a symlinked run is listed."""
    monkeypatch.setenv("SE_OFFLINE", "true")
    logdir = tmp_path / "logs"
    write_big_log(logdir / "big")
    os.symlink(logdir / "big", logdir / "linked")
    os.makedirs(logdir / "unreadable" / "activations")
    (logdir / "unreadable" / "activations" / "events.out.tfevents.1.host.1.0").write_bytes(bytes(range(256)) * 4)
    server = Server(logdir, "--load_fast=false")
    browser = None
    try:
        assert server.json("/data/plugin/activations/runs")["runs"] == ["big/activations", "linked/activations"]
        # Damage one picture's record once the server has indexed it: it cannot be read back.
        reader = RunReader(str(logdir / "big" / "activations"), pictures=False)
        reader.update()
        path, offset = reader.result().images["feature_maps/block01"][5].location
        with open(path, "r+b") as file:
            file.seek(offset + 40)
            file.write(b"\0" * 16)
        browser = chromium(tmp_path / "profile", size="1280,800")
        open_tab(browser, server.url)
        page = wait(browser, lambda p: len(p["rows"]) == BLOCKS + 2 and p["grid"], "the grid")
        assert page["runs"] == ["big/activations", "linked/activations"]
        assert any(n.startswith("unreadable/activations: no readable tbviz pictures") for n in page["notices"])
        # The input is the first row, drawn as the image (32 x 32 RGB, not 3 maps), and the probes' thumbnails.
        assert page["rows"][0] == "probe-row"
        first = [i for i in page["grid"] if i["layer"] == "image"]
        wait(browser, lambda p: all(i["loaded"] for i in p["grid"] if i["layer"] == "image"), "the input row")
        assert page["labels"][0]["text"].startswith("image\nthe probe, as the model sees it\nInputLayer · (32, 32, 3)")
        page = wait(browser, lambda p: all(b["loaded"] for b in p["probes"]), "the probe thumbnails")
        thumbs = [urllib.parse.parse_qs(b["thumb"].partition("?")[2]) for b in page["probes"]]
        assert [(t["layer"], t["step"], t["sample"]) for t in thumbs] == [
            (["image"], [str(STEPS[-1])], [str(p)]) for p in range(3)
        ]
        assert first and all(i["width"] >= 3 * 32 and i["rendering"] == "pixelated" for i in first)  # enlarged
        with Image.open(io.BytesIO(server.get(f"/data/plugin/activations/{page['probes'][0]['thumb']}")[2])) as input_png:
            assert input_png.mode == "RGB" and input_png.size == (32, 32)
        # The picture the server could not read back: its message, not a broken image.
        page = wait(browser, lambda p: p["failed"], "the unreadable picture's message")
        assert "picture not shown: tbviz activations: the picture is no longer readable" in page["failed"][0]

        # Scrolled down: the epoch header stays under the controls, which stay at the top.
        browser.execute_script("document.querySelector('.tbviz .scroll').scrollTop = 2500")
        page = wait(browser, lambda p: p["scrolled"]["top"] >= 2500, "scrolled down")
        boxes = page["boxes"]
        assert boxes["controls"]["top"] == pytest.approx(boxes["scroll"]["top"], abs=1)
        assert boxes["header"]["top"] == pytest.approx(boxes["controls"]["bottom"], abs=2)
        # Wider than the window (every epoch, large): the layer column stays at the left.
        stride = browser.find_element(By.ID, "stride")
        browser.execute_script("arguments[0].value = '1'; arguments[0].dispatchEvent(new Event('change'))", stride)
        browser.execute_script("const s = document.querySelector('#thumb'); s.value = '400'; s.dispatchEvent(new Event('input'))")
        browser.execute_script("document.querySelector('.tbviz .scroll').scrollLeft = 900")
        page = wait(browser, lambda p: p["scrolled"]["left"] >= 900 and len(p["columns"]) == len(STEPS), "scrolled right")
        assert page["boxes"]["firstLabel"]["left"] == pytest.approx(page["boxes"]["scroll"]["left"], abs=1)
        assert page["boxes"]["bar"]["top"] >= 0  # the run, probe and view controls: still there

        click_view(browser, "slider")
        page = wait(browser, lambda p: len(p["sliderImages"]) == BLOCKS + 2 and p["failed"], "the slider view")
        assert [i["layer"] for i in page["sliderImages"] if i["hidden"]] == ["block01"]  # unreadable there
        browser.find_element(By.ID, "epoch-slider").send_keys(Keys.HOME)
        wait(browser, lambda p: not p["failed"] and all(i["step"] == "0" and not i["hidden"] for i in p["sliderImages"]),
             "every picture at the first epoch, block01's too")  # fmt: skip
        browser.execute_script("document.querySelector('.tbviz .scroll').scrollTop = 3000")
        page = wait(browser, lambda p: p["scrolled"]["top"] >= 3000, "the slider view scrolled")
        slider, scroll = page["boxes"]["slider"], page["boxes"]["scroll"]
        assert scroll["top"] <= slider["top"] and slider["bottom"] <= scroll["top"] + 80, (slider, scroll)

        click_view(browser, "compare")
        # Every layer's difference but two: the unreadable picture's and the resized layer's, which say why.
        page = wait(browser, lambda p: len(p["differences"]) == BLOCKS and len(p["failed"]) == 2, "the differences")
        unreadable, mismatch = page["failed"]
        assert unreadable.startswith("tbviz activations: the picture is no longer readable")
        assert mismatch.startswith("cannot compare: the pictures differ in size (A 21×21, B 25×25 pixels)")
        assert page["inlineNotices"] == [
            'A and B were pictured differently (normalize "map" / "layer"): the difference mixes two scales.'
        ]
        assert severe_errors(browser) == [] or all("404" in e["message"] for e in severe_errors(browser))
    finally:
        if browser is not None:
            browser.quit()
        server.close()


def test_the_page_difference_is_b_minus_a_of_the_normalised_values(tmp_path, monkeypatch):
    """The page's difference of two palette pictures: index i is i / 253; 0 -> 253 is the red end,
    equal the white middle, 253 -> 0 the blue end; separators grey, NaN/Inf magenta; mean |B - A|
    over the pixels real in both; pictures of different sizes are refused with a message."""
    monkeypatch.setenv("SE_OFFLINE", "true")
    page = tmp_path / "page.html"
    page.write_text(f"<!doctype html><meta charset='utf-8'><script>{PICTURES_JS.read_text()}</script>")
    browser = chromium(tmp_path / "profile", offline=True)
    try:
        browser.get(page.as_uri())
        result = browser.execute_async_script(
            """
            const [a, b, other, plain, filtered, done] = arguments;
            // Blues, one white middle, reds: the side a pixel falls on is its sign.
            const colours = {palette: [...Array(255).keys()].map((i) => i < 127 ? '#0000ff' : i > 127 ? '#ff0000' : '#ffffff'),
                             separator: '#c8c8c8', nonfinite: '#ff00ff'};
            const v = globalThis.tbvizViewer;
            v.difference(a, b, colours).then(async (d) => {
              const image = new Image(); image.src = d.url; await image.decode();
              const canvas = document.createElement('canvas'); canvas.width = image.width; canvas.height = 1;
              const context = canvas.getContext('2d'); context.drawImage(image, 0, 0);
              const px = [...context.getImageData(0, 0, image.width, 1).data];
              let refused = null;
              try { await v.difference(a, other, colours); } catch (e) { refused = e.message; }
              const unfiltered = await v.difference(plain, filtered, colours);
              done({mean: d.mean, range: d.range, max: d.max, pixels: [0, 1, 2, 3, 4].map((i) => px.slice(4 * i, 4 * i + 3)),
                    refused, filteredMean: unfiltered.mean, filteredMax: unfiltered.max});
            }, (e) => done({error: e.message}));
            """,
            _png_uri([[0, 253, 100, tags.SEPARATOR_INDEX, 7]]),
            _png_uri([[253, 0, 100, tags.SEPARATOR_INDEX, tags.NONFINITE_INDEX]]),
            _png_uri([[1], [2]]),
            _png_uri(FILTERED),
            _filtered_png_uri(FILTERED),
        )
    finally:
        browser.quit()
    assert "error" not in result, result
    assert result["mean"] == pytest.approx((1 + 1 + 0) / 3)
    assert result["range"] == pytest.approx(1.0) and result["max"] == pytest.approx(1.0)
    assert result["pixels"] == [[255, 0, 0], [0, 0, 255], [255, 255, 255], [200, 200, 200], [255, 0, 255]]
    assert "differ in size (A 5×1, B 1×2 pixels)" in result["refused"]
    # A PNG whose rows use the Sub, Up, Average and Paeth filters reads the same indices.
    assert result["filteredMean"] == 0 and result["filteredMax"] == 0


FILTERED = [[3, 200, 7, 90, 253], [250, 1, 130, 66, 9], [12, 240, 5, 5, 180], [0, 99, 254, 255, 17]]


def _filtered_png_uri(indices) -> str:
    """A palette PNG of `indices` whose rows use PNG filters 1 to 4 (Sub, Up, Average, Paeth)."""
    import base64
    import struct
    import zlib

    rows = np.asarray(indices, np.int64)
    raw = bytearray()
    for y, row in enumerate(rows):
        kind = y % 4 + 1
        up = rows[y - 1] if y else np.zeros_like(row)
        left = np.concatenate([[0], row[:-1]])
        up_left = np.concatenate([[0], up[:-1]])
        if kind == 1:
            predicted = left
        elif kind == 2:
            predicted = up
        elif kind == 3:
            predicted = (left + up) // 2
        else:
            p = left + up - up_left
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
            predicted = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
        raw += bytes([kind]) + bytes(((row - predicted) % 256).astype(np.uint8))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", rows.shape[1], rows.shape[0], 8, 3, 0, 0, 0)
    palette = bytes(np.repeat(np.arange(256, dtype=np.uint8), 3))
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"PLTE", palette)
    data += chunk(b"IDAT", zlib.compress(bytes(raw))) + chunk(b"IEND", b"")
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _png_uri(indices) -> str:
    """A palette PNG (grey levels: what the colours are does not matter), as a data: URI."""
    import base64

    indices = np.asarray(indices, np.uint8)
    grey = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    return "data:image/png;base64," + base64.b64encode(png.encode_palette_png(indices, grey)).decode()
