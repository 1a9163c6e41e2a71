"""The viewer outside TensorBoard: a real notebook kernel (nbclient), and HTML opened from disk offline.

`ActivationLogger(..., notebook=True)` keeps one output under the training cell,
replaced at each logged epoch; `tbviz.show` displays the whole log; `tbviz export
--html` writes one file. All three are the tab's page code with the pictures
embedded: they must work in headless Chromium from a file:// URL with the
network unreachable.
"""

from __future__ import annotations

import base64
import io
import json
import re
import warnings

import nbformat
import pytest
from _browser_support import RESOURCES, chromium, click_view, severe_errors, wait
from _cli_support import DEMO_EPOCHS, DEMO_LAYERS, DEMO_PROBES, run_tbviz
from conftest import small_cnn
from nbclient import NotebookClient
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

import tbviz
from tbviz.io import tags
from tbviz.io.reader import read_run
from tbviz.plugin import html, logs, viewdata

EMBEDDED = re.compile(r'<script type="application/json" class="tbviz-data">(.*?)</script>', re.S)

TRAIN = """
import numpy as np, keras, tbviz
keras.utils.set_random_seed(0)
inputs = keras.Input((12, 12, 3), name="rgb")
x = keras.layers.Conv2D(8, 3, activation="relu", name="conv_a")(inputs)
x = keras.layers.MaxPooling2D(name="pool_a")(x)
x = keras.layers.Conv2D(4, 3, activation="relu", name="conv_b")(x)
outputs = keras.layers.Dense(3, activation="softmax", name="head")(keras.layers.Flatten(name="flat")(x))
model = keras.Model(inputs, outputs)
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
rng = np.random.default_rng(0)
x, y = rng.random((32, 12, 12, 3), dtype=np.float32), rng.integers(0, 3, 32)
"""
EPOCHS = 3


class RecordingClient(NotebookClient):
    """nbclient's own client, noting the type of every message each cell's execution sent."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.messages: list[tuple[int, str]] = []

    def process_message(self, msg, cell, cell_index):
        self.messages.append((cell_index, msg["msg_type"]))
        return super().process_message(msg, cell, cell_index)


def embedded(output) -> dict:
    """The viewer's data in a display output: the JSON its HTML embeds."""
    (payload,) = EMBEDDED.findall(output["data"]["text/html"])
    return json.loads(payload)


def page_of(*fragments: str) -> str:
    """A saved notebook's outputs as a browser gets them: the HTML, in a page of its own."""
    return "<!doctype html><html><head><meta charset='utf-8'></head><body>" + "".join(fragments) + "</body></html>"


# Replaces the first output with `html` the way Jupyter renders an output: the HTML set, then
# each script element made again so that it runs.
REPLACE = """
const output = document.querySelector('.tbviz-embed');
const holder = document.createElement('div');
holder.innerHTML = arguments[0];
for (const old of holder.querySelectorAll('script')) {
  const script = document.createElement('script');
  for (const {name, value} of old.attributes) script.setAttribute(name, value);
  script.textContent = old.textContent;
  old.replaceWith(script);
}
output.replaceWith(...holder.childNodes);
"""


def assert_offline(browser) -> None:
    """Everything the page used came with it: no http(s) resource was even asked for."""
    resources = browser.execute_script(RESOURCES)
    assert resources[0].startswith("file://")
    assert all(r.startswith(("file://", "data:")) for r in resources), resources


def play_the_slider(browser, viewer: int, layers: list[str], last: int, probe: str | None = None) -> None:
    """In the `viewer`-th viewer: the slider's ends show every layer at the first and last step;
    every picture changes but the `probe`'s (the model's input: the same every epoch)."""
    click_view(browser, "slider", viewer)
    page = wait(browser, lambda p: len(p["sliderImages"]) == len(layers) and all(i["loaded"] for i in p["sliderImages"]),
                "the slider's pictures", viewer=viewer)  # fmt: skip
    assert page["slider"] == last
    at_last = {i["layer"]: i["src"] for i in page["sliderImages"]}
    slider = browser.find_elements(By.CSS_SELECTOR, ".tbviz")[viewer].find_element(By.CSS_SELECTOR, "#epoch-slider")
    slider.send_keys(Keys.HOME)
    page = wait(browser, lambda p: p["slider"] == 0 and all(i["loaded"] and i["step"] == "0" for i in p["sliderImages"]),
                "the first epoch", viewer=viewer)  # fmt: skip
    assert [i["layer"] for i in page["sliderImages"]] == layers
    changed = {i["layer"] for i in page["sliderImages"] if i["src"] != at_last[i["layer"]]}
    assert changed == set(layers) - {probe}, "the slider changes the pictures"


@pytest.mark.backend_independent  # the kernel trains on the run's backend; the viewer is the same on all
def test_a_notebook_shows_one_live_viewer_while_training_and_the_whole_log_after(tmp_path, monkeypatch):
    """A real kernel runs a notebook: fit() with notebook=True leaves one output, updated in place
    at each epoch to the last; tbviz.show holds every logged layer, epoch and probe as logged,
    the RGB input as an RGB picture; saved and opened from disk offline, both viewers work."""
    monkeypatch.setenv("SE_OFFLINE", "true")
    logdir = str(tmp_path / "logs")
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(TRAIN),
        nbformat.v4.new_code_cell(
            f"model.fit(x, y, epochs={EPOCHS}, verbose=0, callbacks=["
            f"tbviz.ActivationLogger(x[:3], log_dir={logdir!r}, layers='all', notebook=True)]);"
        ),
        nbformat.v4.new_code_cell(f"tbviz.show({logdir!r})"),
    ]
    client = RecordingClient(notebook, timeout=600, kernel_name="python3")
    client.execute()

    # One output under the training cell, shown at the first epoch and replaced at each later one.
    sent = [kind for cell, kind in client.messages if cell == 1 and kind.endswith("display_data")]
    assert sent == ["display_data"] + ["update_display_data"] * (EPOCHS - 1)
    (live,) = [o for o in notebook.cells[1].outputs if o["output_type"] == "display_data"]
    assert embedded(live)["answers"]["activations"]["steps"] == list(range(EPOCHS))
    assert [o["output_type"] for o in notebook.cells[1].outputs if o["output_type"] != "stream"] == ["display_data"]

    # tbviz.show: every layer, epoch and probe picture, byte for byte as logged.
    (shown,) = [o for o in notebook.cells[2].outputs if o["output_type"] == "display_data"]
    data = embedded(shown)
    logged = read_run(f"{logdir}/activations")
    layers = logs.Run("activations", "", logged).layers
    assert layers[0] == "rgb" and {"conv_a", "pool_a", "conv_b", "head"} <= set(layers)
    answer = data["answers"]["activations"]
    assert [layer["name"] for layer in answer["layers"]] == layers
    for layer in layers:
        for item in logged.images[tags.tag(tags.IMAGE, layer)]:
            assert [base64.b64decode(p) for p in data["pictures"]["activations"][layer][str(item.step)]] == item.pngs
    rgb = answer["layers"][0]["info"]
    assert (rgb["layer_class"], rgb["layout"], rgb["channels"]) == ("InputLayer", "image", 3)
    with Image.open(io.BytesIO(logged.images["feature_maps/rgb"][-1].pngs[0])) as picture:
        assert picture.mode == "RGB"
    assert data["notices"] == []
    saved = nbformat.writes(notebook)
    assert len(saved) < 2_000_000, len(saved)

    # Saved, then opened later with no kernel and no network: both viewers work.
    page = tmp_path / "notebook.html"
    page.write_text(page_of(live["data"]["text/html"], shown["data"]["text/html"]))
    browser = chromium(tmp_path / "profile", offline=True)
    try:
        browser.get(page.as_uri())
        wait(browser, lambda p: p["grid"] and all(i["loaded"] for i in p["grid"]), "the live viewer's grid")
        first = wait(browser, lambda p: p["probes"] and all(b["loaded"] for b in p["probes"]), "the probe thumbnails", viewer=1)
        assert [b["probe"] for b in first["probes"]] == ["0", "1", "2"]  # the RGB input as the probes' pictures
        play_the_slider(browser, 1, layers, EPOCHS - 1, probe="rgb")
        play_the_slider(browser, 0, layers, EPOCHS - 1, probe="rgb")
        # The live output replaced by its next update (as Jupyter does: new HTML, its scripts
        # run again) keeps what the user chose: the view, and the epoch on the slider.
        browser.execute_script(REPLACE, live["data"]["text/html"])
        page = wait(browser, lambda p: p["view"] == "slider" and p["sliderImages"], "the live view after an update")
        assert page["slider"] == 0
        assert_offline(browser)
        assert severe_errors(browser) == []
    finally:
        browser.quit()


@pytest.mark.backend_independent
def test_export_html_is_one_file_that_works_offline(demo_log, tmp_path, monkeypatch):
    """tbviz export --html: one file; from disk, offline: the grid, a slider that changes the
    pictures, the enlarged view with its numbers, compare's differences; nothing fetched."""
    monkeypatch.setenv("SE_OFFLINE", "true")
    logdir, _ = demo_log
    report = tmp_path / "report.html"
    process = run_tbviz("export", str(logdir), "--html", str(report))
    assert process.returncode == 0, process.stderr
    assert process.stdout.startswith(f"viewer of 1 run(s) -> {report} (")
    text = report.read_text()
    assert text.startswith("<!doctype html>") and "<script src" not in text and "<link" not in text
    browser = chromium(tmp_path / "profile", offline=True, size="1400,900")
    try:
        browser.get(report.as_uri())
        page = wait(browser, lambda p: len(p["grid"]) == len(DEMO_LAYERS) * DEMO_EPOCHS and all(i["loaded"] for i in p["grid"]),
                    "the grid")  # fmt: skip
        assert page["columns"] == [f"epoch {tags.epoch_number(s)}" for s in range(DEMO_EPOCHS)]
        assert [b["probe"] for b in page["probes"]] == [str(p) for p in range(DEMO_PROBES)]
        browser.find_element(By.CSS_SELECTOR, "#grid img[data-layer='pool2']").click()
        page = wait(browser, lambda p: p["zoom"] and p["zoom"]["loaded"] and p["zoom"]["numbers"].get("mean"), "the enlarged view")
        browser.switch_to.active_element.send_keys(Keys.ARROW_RIGHT)
        wait(browser, lambda p: p["zoom"]["step"] == "1" and p["zoom"]["numbers"].get("change"), "the next epoch")
        browser.switch_to.active_element.send_keys(Keys.ESCAPE)
        play_the_slider(browser, 0, DEMO_LAYERS, DEMO_EPOCHS - 1)
        click_view(browser, "compare")
        page = wait(browser, lambda p: len(p["differences"]) == len(DEMO_LAYERS) and all(i["loaded"] for i in p["differences"]),
                    "the differences")  # fmt: skip
        assert all("mean |B − A| = " in legend for legend in page["differenceLegends"])
        click_view(browser, "change")
        wait(browser, lambda p: len(p["heat"]) == len(DEMO_LAYERS) * DEMO_EPOCHS, "the heat map")
        assert_offline(browser)
        assert severe_errors(browser) == []
    finally:
        browser.quit()


@pytest.mark.backend_independent
def test_the_viewer_embeds_the_logged_pngs_and_keeps_to_its_budget(demo_log):
    """Everything fits: each logged PNG once, as base64. Past max_bytes: fewer probe images, then
    fewer epochs, then fewer layers, each said in a notice; wrong layers or probes are refused."""
    logdir, _ = demo_log
    runs, _ = logs.load_runs(str(logdir), pictures=False, kinds=viewdata.KINDS)
    logged = read_run(str(logdir / "activations"))
    pngs = sum(len(p) for layer in DEMO_LAYERS for item in logged.images[tags.tag(tags.IMAGE, layer)] for p in item.pngs)
    full = html.viewer(runs, title="demo", max_bytes=None)
    embedded_bytes = sum(len(p) for layer in full["pictures"]["activations"].values() for step in layer.values() for p in step)
    assert embedded_bytes == pytest.approx(pngs * 4 / 3, rel=0.01) and full["notices"] == []
    assert len(html.page(full)) < embedded_bytes + 200_000  # the page code, the numbers: small beside the pictures

    half = html.viewer(runs, title="demo", max_bytes=int(pngs * 4 / 3 / 2))
    assert half["answers"]["activations"]["probes"] == [0, 1]
    assert half["notices"][0] == f"To stay under {int(pngs * 4 / 3 / 2) / 1e6:g} MB, this viewer holds probe images 0, 1 of 4."
    kept = half["pictures"]["activations"]["conv1"]["0"]
    assert kept[0] and kept[1] and kept[2] is None and kept[3] is None

    tiny = html.viewer(runs, title="demo", max_bytes=1)
    assert tiny["answers"]["activations"]["probes"] == [0]
    assert tiny["answers"]["activations"]["steps"] == [DEMO_EPOCHS - 1]  # the last epoch
    assert len(tiny["answers"]["activations"]["layers"]) == 1
    assert [n.split(",")[0] for n in tiny["notices"][:3]] == ["To stay under 1e-06 MB"] * 3
    assert "max_bytes=None" in tiny["notices"][-1]

    with pytest.raises(ValueError, match=r"no layer matches layers= 'dense\*'; layers in run 'activations': conv1, pool1"):
        tbviz.show(logdir, layers="dense*")
    with pytest.raises(ValueError, match=r"`probes` must name logged probe images, 0 to 3. Received: probes=\[7\]"):
        tbviz.show(logdir, probes=[7])
    with pytest.raises(ValueError, match="no tbviz images in"):
        tbviz.show(logdir / "train")


def test_notebook_true_outside_a_notebook_changes_nothing(tmp_path, data):
    """Outside IPython, notebook=True logs as usual, with no error and no warning; it takes a bool."""
    x, y, probe = data
    with warnings.catch_warnings():
        warnings.simplefilter("error", tbviz.TbvizWarning)
        small_cnn().fit(x, y, epochs=2, verbose=0,
                        callbacks=[tbviz.ActivationLogger(probe, log_dir=tmp_path, notebook=True)])  # fmt: skip
    assert [s.step for s in read_run(str(tmp_path / "activations")).images["feature_maps/conv_a"]] == [0, 1]
    with pytest.raises(TypeError, match="`notebook` must be True or False. Received: notebook='yes'"):
        tbviz.ActivationLogger(probe, notebook="yes")
