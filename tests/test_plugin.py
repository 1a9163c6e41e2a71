"""The ACTIVATIONS tab's server: a real `tensorboard --logdir` (no flags) over real training logs."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import urllib.parse

import numpy as np
import pytest
from _cli_support import write_log
from _tensorboard_support import CommandLineServer, Server
from conftest import small_cnn
from PIL import Image

from tbviz import ActivationLogger
from tbviz.io import tags
from tbviz.io.reader import RunReader, read_pictures, read_run
from tbviz.plugin import IMAGE_SAMPLES, PLUGIN_NAME

pytestmark = pytest.mark.backend_independent  # not about the Keras backend: runs once (conftest.py)

HOSTILE = "<img src=x onerror=alert(1)>"
LAYERS = ["conv_a", "pool_a", "conv_b"]
ROUTE = f"/data/plugin/{PLUGIN_NAME}"


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    """Two experiments trained for real (every epoch; freq=5), a hostile layer name, a damaged file."""
    root = tmp_path_factory.mktemp("plugin") / "logs"
    rng = np.random.default_rng(0)
    x = rng.random((32, 12, 12, 1), dtype=np.float32)
    y = rng.integers(0, 3, 32)
    small_cnn().fit(x, y, epochs=3, verbose=0,
                    callbacks=[ActivationLogger(x[:3], log_dir=root / "exp1")])  # fmt: skip
    small_cnn(seed=1).fit(x, y, epochs=11, verbose=0,
                          callbacks=[ActivationLogger(x[:3], log_dir=root / "exp2", freq=5)])  # fmt: skip
    write_log(root / "hostile" / "activations", {HOSTILE: (8, 6), "../../etc/passwd": (4, 4)}, range(2))
    damaged = write_log(root / "damaged" / "activations", {"conv": (10, 10)}, range(4))
    with open(damaged, "r+b") as file:  # a flipped byte in the third record (after the version): step 1
        data = bytearray(file.read())
        offsets = _record_offsets(bytes(data))
        data[offsets[2] + 20] ^= 0xFF
        file.seek(0)
        file.write(data)
    return root


def _record_offsets(data: bytes) -> list[int]:
    offsets, offset = [], 0
    while offset < len(data):
        offsets.append(offset)
        (length,) = np.frombuffer(data[offset : offset + 8], "<u8")
        offset += 12 + int(length) + 4
    return offsets


@pytest.fixture(scope="module")
def board(logdir):
    """Plain ``tensorboard --logdir`` (the Python loader, so that it runs in this process)."""
    server = Server(logdir, "--load_fast=false")
    yield server
    server.close()


def query(route: str, **params) -> str:
    return f"{ROUTE}/{route}?{urllib.parse.urlencode(params)}"


def test_the_plugin_is_listed_active_as_an_iframe_module(board):
    """/data/plugins_listing: the plugin is active, with the ES module TensorBoard loads in an iframe."""
    listing = board.json("/data/plugins_listing")[PLUGIN_NAME]
    assert listing["enabled"] is True
    assert listing["tab_name"] == "Activations"
    assert listing["loading_mechanism"] == {"type": "IFRAME", "module_path": f"{ROUTE}/index.js"}
    status, headers, body = board.get(f"{ROUTE}/index.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert b"export async function render()" in body
    status, headers, _ = board.get(f"{ROUTE}/style.css")
    assert status == 200 and headers["Content-Type"].startswith("text/css")


def test_runs_are_found_at_any_depth(board):
    """Every <experiment>/activations run with pictures is listed, sorted."""
    runs = board.json(f"{ROUTE}/runs")
    assert runs["runs"] == [f"{name}/activations" for name in ("damaged", "exp1", "exp2", "hostile")]


def test_run_gives_layers_in_model_order_every_logged_epoch_and_the_change(board):
    """A trained run: layers in model order, every logged epoch (freq=5), change from the second."""
    versions = board.json(f"{ROUTE}/runs")["versions"]
    for run, steps in (("exp1/activations", [0, 1, 2]), ("exp2/activations", [0, 5, 10])):
        data = board.json(query("run", run=run))
        assert data["version"] == versions[run]
        assert data["steps"] == steps and data["notices"] == []
        assert [layer["name"] for layer in data["layers"]] == LAYERS
        for layer in data["layers"]:
            assert layer["steps"] == steps and layer["samples"] == 3
            assert layer["normalize"] == "map"
            first, *later = layer["change"]  # one per logged step
            assert first is None and len(later) == len(steps) - 1
            assert all(math.isfinite(v) and v > 0 for v in later)


def test_change_is_a_scalar_in_the_scalars_dashboard(board):
    """change/<layer> is an ordinary scalar: TensorBoard's Scalars dashboard lists and serves it."""
    scalar_tags = board.json("/data/plugin/scalars/tags")["exp1/activations"]
    assert {tags.tag(tags.CHANGE, layer) for layer in LAYERS} <= set(scalar_tags)
    values = board.json("/data/plugin/scalars/scalars?run=exp1/activations&tag=change/conv_b")
    assert [step for _, step, _ in values] == [1, 2]


def test_picture_is_the_logged_png_and_cacheable(board, logdir):
    """A picture is the logged PNG byte for byte, cached by the browser."""
    logged = read_run(str(logdir / "exp2" / "activations"))
    for step_index, step in enumerate((0, 5, 10)):
        for sample in range(3):
            status, headers, body = board.get(
                query("picture", run="exp2/activations", layer="pool_a", step=step, sample=sample)
            )
            assert status == 200 and headers["Content-Type"] == "image/png"
            assert body == logged.images["feature_maps/pool_a"][step_index].pngs[sample]
    assert "max-age=" in headers["Cache-Control"]


def test_run_answer_holds_the_labels_palettes_and_probes_the_page_draws(board, logdir):
    """/run: each layer's LayerInfo as logged (row labels), the colour maps' palettes as the PNGs
    hold them (colour bars, reading values back), the probes, the heat map's ticks and its 0."""
    data = board.json(query("run", run="exp1/activations"))
    logged = read_run(str(logdir / "exp1" / "activations"))
    for layer in data["layers"]:
        assert layer["info"] == json.loads(json.dumps(dataclasses.asdict(logged.info(layer["name"]))))
        assert "infos" not in layer and "info_at" not in layer  # pictured the same at every step
    assert data["probes"] == [0, 1, 2]
    with Image.open(io.BytesIO(logged.images["feature_maps/conv_a"][0].pngs[0])) as picture:
        colours = np.asarray(picture.getpalette()[:768]).reshape(256, 3)
    assert data["palettes"]["viridis"] == ["#{:02x}{:02x}{:02x}".format(*c) for c in colours]
    difference = data["difference"]["palette"]
    assert len(difference) == 255 and difference[127] == "#f7f7f7"  # RdBu_r: 0 in the white middle
    scale = data["change_scale"]
    assert scale["zero"] == "#ffffff"
    assert scale["ticks"][0] == pytest.approx(scale["low"], rel=1e-3)
    assert scale["ticks"][-1] == pytest.approx(scale["high"], rel=1e-3)


def test_numbers_are_the_layers_scalars_at_each_logged_step(board, logdir):
    """/numbers: a layer's mean, std, health figures and change at each logged step, as logged."""
    answer = board.json(query("numbers", run="exp2/activations", layer="conv_b"))
    logged = read_run(str(logdir / "exp2" / "activations"))
    assert answer["steps"] == [0, 5, 10]
    assert {"mean", "std", "zero_fraction", "change"} <= set(answer["numbers"])
    for kind, values in answer["numbers"].items():
        expected = dict(logged.scalars[tags.tag(kind, "conv_b")])
        for step, value in zip(answer["steps"], values, strict=True):
            if step in expected:
                assert value == pytest.approx(expected[step], rel=1e-3)
            else:
                assert value is None  # change: nothing to compare the first step with


@pytest.mark.parametrize(
    "route, params, message",
    [
        ("run", {"run": "../../etc"}, "unknown run '../../etc'"),
        ("run", {}, "missing parameter 'run'"),
        ("run", {"run": "exp1/train"}, "unknown run 'exp1/train'"),
        ("picture", {"run": "exp1/activations/../../..", "layer": "conv_a", "step": 0, "sample": 0},
         "unknown run"),
        ("picture", {"run": "exp1/activations", "layer": "../conv_a", "step": 0, "sample": 0},
         "has no layer '../conv_a'"),
        ("picture", {"run": "exp1/activations", "layer": "conv_a", "step": 7, "sample": 0},
         "has no logged step 7; its 3 logged steps run from 0 to 2 (epochs 1 to 3, as Keras prints them)"),
        ("picture", {"run": "exp2/activations", "layer": "conv_a", "step": 4, "sample": 0},
         "has no logged step 4; its 3 logged steps run from 0 to 10"),
        ("picture", {"run": "exp1/activations", "layer": "conv_a", "step": "1e3", "sample": 0},
         "'step' must be an integer"),
        ("picture", {"run": "exp1/activations", "layer": "conv_a", "step": 0, "sample": 10**30},
         f"no probe image {10**30} at step 0 (epoch 1): there are 3 (0 to 2)"),
        ("picture", {"run": "exp1/activations", "layer": "conv_a", "step": 0, "sample": -1},
         "no probe image -1"),
        ("picture", {"run": "exp1/activations", "layer": "conv_a", "step": 0}, "'sample' must be"),
        ("numbers", {"run": "nope", "layer": "conv_a"}, "unknown run 'nope'"),
        ("numbers", {"run": "exp1/activations"}, "missing parameter 'layer'"),
        ("numbers", {"run": "exp1/activations", "layer": "conv"}, "has no layer 'conv'"),
    ],
)
def test_hostile_or_wrong_parameters_are_a_400_with_a_message(board, route, params, message):
    """Anything that was not logged is a 400 naming what was wrong; never a trace, never a file read."""
    status, headers, body = board.get(query(route, **params))
    assert status == 400, body
    assert headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    assert message in text and "Traceback" not in text


def test_hostile_layer_names_are_data(board):
    """Layer names that look like HTML or a path are listed as they are and served by exact name."""
    data = board.json(query("run", run="hostile/activations"))
    assert [layer["name"] for layer in data["layers"]] == [HOSTILE, "../../etc/passwd"]
    status, _, body = board.get(query("picture", run="hostile/activations", layer=HOSTILE, step=1, sample=0))
    assert status == 200 and body.startswith(b"\x89PNG")
    status, _, body = board.get(
        query("picture", run="hostile/activations", layer="../../etc/passwd", step=0, sample=1)
    )
    assert status == 200 and body.startswith(b"\x89PNG")


def test_a_damaged_file_shows_what_is_readable_with_a_notice(board):
    """A corrupted record is skipped: the other epochs are served and a notice says what was lost."""
    data = board.json(query("run", run="damaged/activations"))
    assert data["steps"] == [0, 2, 3]
    (notice,) = data["notices"]
    assert "corrupted record" in notice and "checksum mismatch" in notice
    status, _, _ = board.get(query("picture", run="damaged/activations", layer="conv", step=3, sample=0))
    assert status == 200


def test_a_live_run_shows_new_epochs_and_new_runs(tmp_path):
    """While training writes, new epochs (appended or in a new file) and new runs appear."""
    run_dir = tmp_path / "live" / "activations"
    write_log(run_dir, {"conv": (6, 6)}, range(2))
    server = Server(tmp_path, "--load_fast=false")
    try:
        assert server.json(query("run", run="live/activations"))["steps"] == [0, 1]
        version = server.json(f"{ROUTE}/runs")["versions"]["live/activations"]
        write_log(run_dir, {"conv": (6, 6)}, range(2, 4))  # a second event file
        assert server.json(f"{ROUTE}/runs")["versions"]["live/activations"] != version
        assert server.json(query("run", run="live/activations"))["steps"] == [0, 1, 2, 3]
        write_log(tmp_path / "later" / "activations", {"conv": (6, 6)}, range(1))
        assert server.json(f"{ROUTE}/runs")["runs"] == ["later/activations", "live/activations"]
        status, _, _ = server.get(query("picture", run="later/activations", layer="conv", step=0, sample=1))
        assert status == 200
    finally:
        server.close()


def test_reader_reads_only_what_was_appended(tmp_path):
    """RunReader: records appended to an open event file are read on the next update, once."""
    path = write_log(tmp_path, {"conv": (4, 4)}, range(2))
    reader = RunReader(str(tmp_path), pictures=False)
    assert reader.update()
    assert [s.step for s in reader.result().images["feature_maps/conv"]] == [0, 1]
    assert not reader.update()
    later = write_log(tmp_path / "more", {"conv": (4, 4)}, range(2, 5))
    with open(later, "rb") as source, open(path, "ab") as target:  # appended to the first file
        content = source.read()
        target.write(content[: len(content) - 7])  # the last record still incomplete
    assert reader.update()
    result = reader.result()
    assert [s.step for s in result.images["feature_maps/conv"]] == [0, 1, 2, 3]
    assert any("still being written" in p for p in result.problems)
    with open(path, "ab") as target:
        target.write(content[len(content) - 7 :])
    assert reader.update()
    result = reader.result()
    assert [s.step for s in result.images["feature_maps/conv"]] == [0, 1, 2, 3, 4]
    assert result.problems == []
    item = result.images["feature_maps/conv"][4]
    assert item.pngs == [] and item.count == 2
    assert read_pictures(item, "feature_maps/conv") == read_run(
        str(tmp_path)
    ).images["feature_maps/conv"][4].pngs


def test_stock_images_dashboard_keeps_every_epoch_with_no_flags(tmp_path):
    """With tbviz installed, plain tensorboard keeps all 20 steps per image tag (Python and Rust loaders)."""
    write_log(tmp_path / "activations", {"conv": (6, 6)}, range(20))
    images = "/data/plugin/images/images?run=activations&tag=feature_maps/conv&sample=0"
    server = Server(tmp_path, "--load_fast=false")
    try:
        assert server.flags.samples_per_plugin == {"images": IMAGE_SAMPLES}
        assert [e["step"] for e in server.json(images)] == list(range(20))
    finally:
        server.close()
    server = Server(tmp_path, "--load_fast=false", "--samples_per_plugin=images=5")
    try:  # the user's own choice is kept
        assert len(server.json(images)) == 5
    finally:
        server.close()
    # The command as users type it, with the Rust data server (tensorboard-data-server).
    command = CommandLineServer(tmp_path, "--load_fast=true", "--reload_interval=1")
    try:
        entries = _poll_json(command, images, lambda v: len(v) == 20)
        assert [e["step"] for e in entries] == list(range(20))
        status, _, body = command.get(f"{ROUTE}/run?run=activations")
        assert status == 200 and json.loads(body)["steps"] == list(range(20))
    finally:
        command.close()


def _poll_json(server, path, ready, attempts: int = 120):
    """The Rust data server loads in the background: asks until `ready` (at most ~60 s)."""
    import time

    value = None
    for _ in range(attempts):
        status, _, body = server.get(path)
        if status == 200:
            value = json.loads(body)
            if ready(value):
                return value
        time.sleep(0.5)
    raise AssertionError(f"{path} never got ready; last answer: {value!r}")


def test_wrong_logdirs_show_a_notice(tmp_path):
    """A log directory with no tbviz pictures: no runs, a notice that says where they are expected."""
    os.makedirs(tmp_path / "empty")
    server = Server(tmp_path / "empty", "--load_fast=false")
    try:
        assert server.json("/data/plugins_listing")[PLUGIN_NAME]["enabled"] is False
        runs = server.json(f"{ROUTE}/runs")
        assert runs["runs"] == [] and "No tbviz pictures" in runs["notices"][0]
    finally:
        server.close()


def test_an_unreadable_run_is_a_notice_and_symlinked_runs_are_listed(tmp_path):
    """A run whose only event file is unreadable is named in a notice, not silently missing; runs
    reached through symbolic links are listed under each path, as TensorBoard lists them."""
    logdir = tmp_path / "logs"
    write_log(tmp_path / "elsewhere" / "activations", {"conv": (6, 6)}, range(2))
    os.makedirs(logdir)
    os.symlink(tmp_path / "elsewhere", logdir / "linked")
    write_log(logdir / "real" / "activations", {"conv": (6, 6)}, range(1))
    os.symlink(logdir / "real", logdir / "alias")
    os.makedirs(logdir / "bad" / "activations")
    (logdir / "bad" / "activations" / "events.out.tfevents.1.host.1.0").write_bytes(bytes(range(256)) * 8)
    server = Server(logdir, "--load_fast=false")
    try:
        listing = server.json(f"{ROUTE}/runs")
        tensorboard_runs = set(server.json("/data/runs"))
        assert listing["runs"] == ["alias/activations", "linked/activations", "real/activations"]
        assert set(listing["runs"]) <= tensorboard_runs
        (notice,) = listing["notices"]
        assert notice.startswith("bad/activations: no readable tbviz pictures; skipped while reading: ")
        assert "events.out.tfevents.1.host.1.0" in notice
        status, _, _ = server.get(query("picture", run="linked/activations", layer="conv", step=1, sample=0))
        assert status == 200
    finally:
        server.close()
