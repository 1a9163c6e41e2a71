"""The palette PNGs tbviz writes: exact indices and colours, as Pillow reads and writes them."""

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from tbviz import summary
from tbviz.pictures import palette
from tbviz.summary import encode_palette_png

pytestmark = pytest.mark.backend_independent  # not about the Keras backend: runs once (conftest.py)


def pillow_png(indices: np.ndarray, colours: np.ndarray) -> bytes:
    """The same picture as Pillow writes it (level 3, as tbviz's zlib fallback)."""
    reference = Image.frombytes("P", indices.shape[::-1], indices.tobytes())
    reference.putpalette(colours.tobytes())
    buffer = io.BytesIO()
    reference.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


SHAPES = [(1, 1), (3, 7), (35, 71), (255, 255), (300, 520)]


@pytest.mark.parametrize("shape", SHAPES)
def test_palette_png_round_trip(shape):
    """Every index and the whole palette come back, in about as many bytes as Pillow's."""
    rng = np.random.default_rng(0)
    indices = rng.integers(0, 256, shape, dtype=np.uint8)
    smooth = np.add.outer(np.arange(shape[0]), np.arange(shape[1])).astype(np.uint8) // 4
    colours = palette("viridis")
    for picture in (indices, smooth):
        png = encode_palette_png(picture, colours)
        with Image.open(io.BytesIO(png)) as image:
            assert image.mode == "P" and image.size == shape[::-1]
            np.testing.assert_array_equal(np.asarray(image), picture)
            np.testing.assert_array_equal(
                np.frombuffer(bytes(image.getpalette()), np.uint8).reshape(-1, 3), colours
            )
        assert len(png) <= 1.2 * len(pillow_png(picture, colours)) + 64  # ISA-L: within 2 % here


@pytest.mark.parametrize("shape", SHAPES)
def test_palette_png_without_isal_is_pillows(shape, monkeypatch):
    """Where ISA-L is not installed, zlib at level 3 writes Pillow's own bytes."""
    monkeypatch.setattr(summary, "_deflate", zlib)
    monkeypatch.setattr(summary, "_LEVEL", 3)
    indices = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    colours = palette("viridis")
    reference = pillow_png(indices, colours)
    if len(reference) < 65536:  # Pillow splits larger ones into several IDAT chunks
        assert encode_palette_png(indices, colours) == reference


def test_layer_summary_values_are_laid_out_as_tensorboard_lays_them_out():
    """Pictures, scalars and histogram: the tensors ``tensor_util.make_tensor_proto`` makes
    and the plugin metadata ``tf.summary.image/scalar/histogram`` write, tag by tag."""
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.histogram import metadata as histogram_metadata
    from tensorboard.plugins.image import metadata as image_metadata
    from tensorboard.plugins.scalar import metadata as scalar_metadata
    from tensorboard.util import tensor_util

    from tbviz import metadata

    pictures = np.random.default_rng(2).integers(0, 254, (3, 5, 9), dtype=np.uint8)
    colours = palette("viridis")
    statistics = {"mean": np.float32(0.25), "std": np.float32(1.5), "change": 0.125}
    histogram = np.random.default_rng(3).random((30, 3))
    got = summary_pb2.Summary.FromString(
        summary.layer_summary("block/conv", pictures, colours, description="shrunk",
                              statistics=statistics, histogram=histogram)  # fmt: skip
    )
    images = [b"9", b"5", *(encode_palette_png(p, colours) for p in pictures)]
    expected = [
        (metadata.tag(metadata.IMAGE, "block/conv"), np.array(images, object),
         image_metadata.create_summary_metadata(None, "shrunk")),  # fmt: skip
        *(
            (tag, np.float32(v), scalar_metadata.create_summary_metadata(tag, ""))
            for tag, v in ((metadata.tag(k, "block/conv"), v) for k, v in statistics.items())
        ),
        (metadata.tag(metadata.DISTRIBUTION, "block/conv"), histogram,
         histogram_metadata.create_summary_metadata(
             metadata.tag(metadata.DISTRIBUTION, "block/conv"), "")),  # fmt: skip
    ]
    assert len(got.value) == len(expected)
    for value, (tag, array, plugin) in zip(got.value, expected, strict=True):
        assert value.tag == tag
        assert value.tensor == tensor_util.make_tensor_proto(array), tag
        assert value.metadata == plugin, tag
