"""The PNGs tbviz writes (exact indices and colours, as Pillow reads and writes them), and the
``Summary`` values it writes them in."""

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from tbviz.io import png, summaries
from tbviz.io.png import encode_palette_png, encode_rgb_png, palette

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
    monkeypatch.setattr(png, "_deflate", zlib)
    monkeypatch.setattr(png, "_LEVEL", 3)
    indices = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    colours = palette("viridis")
    reference = pillow_png(indices, colours)
    if len(reference) < 65536:  # Pillow splits larger ones into several IDAT chunks
        assert encode_palette_png(indices, colours) == reference


@pytest.mark.parametrize("shape", [(1, 1), (4, 9), (64, 50)])
def test_rgb_png_round_trip(shape):
    """A colour image's pixels come back exactly (an RGB PNG)."""
    pixels = np.random.default_rng(4).integers(0, 256, (*shape, 3), dtype=np.uint8)
    with Image.open(io.BytesIO(encode_rgb_png(pixels))) as image:
        assert image.mode == "RGB" and image.size == shape[::-1]
        np.testing.assert_array_equal(np.asarray(image), pixels)


def test_layer_summary_values_are_laid_out_as_tensorboard_lays_them_out():
    """Pictures, scalars and histogram: the tensors ``tensor_util.make_tensor_proto`` makes
    and the plugin metadata ``tf.summary.image/scalar/histogram`` write, tag by tag."""
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.histogram import metadata as histogram_metadata
    from tensorboard.plugins.image import metadata as image_metadata
    from tensorboard.plugins.scalar import metadata as scalar_metadata
    from tensorboard.util import tensor_util

    from tbviz.io import tags

    pictures = np.random.default_rng(2).integers(0, 254, (3, 5, 9), dtype=np.uint8)
    colours = palette("viridis")
    statistics = {"mean": np.float32(0.25), "std": np.float32(1.5), "change": 0.125}
    histogram = np.random.default_rng(3).random((30, 3))
    info = tags.LayerInfo(
        layer_class="Conv2D", output_shape=(5, 9, 2), layout="maps", channels=2,
        channels_shown=1, grid=(1, 1), cell=(5, 9), normalize="fixed", clip_percentile=0.0,
        cmap="viridis", coarse=(5, 8), samples=3, shrunk="Made smaller.",
    )  # fmt: skip
    record = summaries.LayerRecord("block/conv", pictures, colours, info, statistics, histogram)
    got = summary_pb2.Summary.FromString(summaries.layer_summary(record))
    images = [b"9", b"5", *(encode_palette_png(p, colours) for p in pictures)]
    layer_tag = tags.tag(tags.LAYER, "block/conv")
    tbviz_metadata = summary_pb2.SummaryMetadata(
        display_name=layer_tag, data_class=summary_pb2.DATA_CLASS_TENSOR
    )
    tbviz_metadata.plugin_data.plugin_name = "activations"
    tbviz_metadata.plugin_data.content = b'{"version": 1}'
    expected = [
        (tags.tag(tags.IMAGE, "block/conv"), np.array(images, object),
         image_metadata.create_summary_metadata(None, info.description("block/conv"))),  # fmt: skip
        *(
            (tag, np.float32(v), scalar_metadata.create_summary_metadata(tag, ""))
            for tag, v in ((tags.tag(k, "block/conv"), v) for k, v in statistics.items())
        ),
        (tags.tag(tags.DISTRIBUTION, "block/conv"), histogram,
         histogram_metadata.create_summary_metadata(
             tags.tag(tags.DISTRIBUTION, "block/conv"), "")),  # fmt: skip
        (layer_tag, np.array(info.to_json().encode(), object), tbviz_metadata),
    ]
    assert len(got.value) == len(expected)
    for value, (tag, array, plugin) in zip(got.value, expected, strict=True):
        assert value.tag == tag
        assert value.tensor == tensor_util.make_tensor_proto(array), tag
        assert value.metadata == plugin, tag
    assert tags.LayerInfo.from_json(got.value[-1].tensor.string_val[0]) == info
    assert "Made smaller." in info.description("block/conv")
