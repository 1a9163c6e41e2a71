"""End to end: a real TensorBoard server serves every logged epoch of every layer."""

import io
import json
import urllib.parse
import urllib.request

import numpy as np
import pytest
from conftest import small_cnn
from PIL import Image
from tensorboard import program

from tbviz import ActivationLogger
from tbviz.io import tags

EPOCHS = 12  # more than the 10 steps per tag TensorBoard keeps by default


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


@pytest.mark.slow
def test_tensorboard_serves_every_epoch(tmp_path, data, tensorboard_servers):
    """Through TensorBoard's HTTP API: one image tag per layer, each epoch a step, PNGs of the logged size."""
    x, y, probe = data
    small_cnn().fit(x, y, epochs=EPOCHS, verbose=0, callbacks=[ActivationLogger(probe, log_dir=tmp_path)])

    board = program.TensorBoard()
    board.configure(argv=[None, "--logdir", str(tmp_path), "--port", "0", "--load_fast=false",
                          "--reload_interval=0", "--reload_task=blocking",
                          "--samples_per_plugin=images=100000"])  # fmt: skip
    url = board.launch().rstrip("/")
    assert len(tensorboard_servers) == 1  # shut down when the test ends

    assert tags.RUN_NAME in json.loads(get(f"{url}/data/runs"))
    image_tags = json.loads(get(f"{url}/data/plugin/images/tags"))[tags.RUN_NAME]
    sizes = {"conv_a": (10, 10, 2, 4), "pool_a": (5, 5, 2, 4), "conv_b": (3, 3, 2, 2)}
    assert set(image_tags) == {tags.tag(tags.IMAGE, name) for name in sizes}
    for name, (h, w, rows, cols) in sizes.items():
        tag = tags.tag(tags.IMAGE, name)
        assert image_tags[tag]["samples"] == len(probe)
        for sample in range(len(probe)):
            query = urllib.parse.urlencode({"run": tags.RUN_NAME, "tag": tag, "sample": sample})
            entries = json.loads(get(f"{url}/data/plugin/images/images?{query}"))
            assert [e["step"] for e in entries] == list(range(EPOCHS))
            png = get(f"{url}/data/plugin/images/individualImage?{entries[-1]['query']}")
            with Image.open(io.BytesIO(png)) as image:
                assert image.format == "PNG" and image.mode == "P"  # 8-bit palette PNG
                assert image.size == (cols * w + cols - 1, rows * h + rows - 1)
                assert np.asarray(image.convert("RGB")).std() > 0  # a picture, not a blank
