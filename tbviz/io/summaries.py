"""One layer's part of a logged epoch as a TensorBoard ``Summary``, built without TensorFlow.

Pictures are written in the format of ``tf.summary.image`` (TensorBoard's
``images`` plugin: a string tensor ``[width, height, png_0, ..., png_k-1]``),
as palette PNGs (`tbviz.io.png`); scalars and the histogram as
``tf.summary.scalar`` and ``histogram`` lay them out; the layer's `LayerInfo`
as a JSON string under tbviz's own plugin name. Tags come from
`tbviz.io.tags`. Each value is laid out as ``tensor_util.make_tensor_proto``
lays it out (tested against it), without its per-call cost, and the plugin
metadata of a tag is made once. Every write is explicit about its step; no
``tf.summary`` state (default writer, ``record_if``) is involved, so the same
code serves every Keras backend.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from tensorboard.compat.proto import summary_pb2, types_pb2
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata

from tbviz.io import tags
from tbviz.io.png import encode_picture

#: The most bytes a layer's summary holds beside its PNGs, framed as an event: tags,
#: plugin metadata, scalars, histogram, `LayerInfo` and health findings (2.6 kB measured
#: for the layers of a ResNet-50 and a MobileNetV2, a path of up to 40 characters, no
#: finding; each finding about 200 bytes more).
LAYER_EXTRA_BYTES = 4_096


@dataclass
class LayerRecord:
    """What is written for one layer at one logged step.

    Attributes:
        path: the layer's path (its tags' suffix).
        pictures: one picture per probe sample: ``(N, H, W)`` uint8 indices
            into `palette`, or ``(N, H, W, 3)`` uint8 RGB pixels for a layer
            pictured as a colour image. All N are written (no ``max_outputs`` cut).
        palette: ``(256, 3)`` uint8 colours of the indices.
        info: how the pictures were made (`tbviz.io.tags.LayerInfo`); None: not written.
        scalars: scalar values by tag kind (``mean``, ``change``, ...).
        histogram: ``(bins, 3)`` rows of ``[left edge, right edge, count]``, or None.
        findings: its health findings at this step (``health/<layer>``, [] for none);
            None: not written (health not judged).
    """

    path: str
    pictures: np.ndarray
    palette: np.ndarray
    info: tags.LayerInfo | None = None
    scalars: dict[str, float] = field(default_factory=dict)
    histogram: np.ndarray | None = None
    findings: list[tags.Finding] | None = None


def layer_summary(record: LayerRecord) -> bytes:
    """`record` as one serialized ``Summary``.

    Needs no writer and touches no shared state, so several threads can make
    them at once (PNG compression releases the GIL).
    """
    path, pictures = record.path, record.pictures
    height, width = pictures.shape[1:3]
    images = [str(width).encode(), str(height).encode()]
    images += [encode_picture(picture, record.palette) for picture in pictures]
    summary = summary_pb2.Summary()
    description = record.info.description(path) if record.info else ""
    _strings(summary, tags.tag(tags.IMAGE, path), images, _image_metadata(description))
    for kind, value in record.scalars.items():
        tag = tags.tag(kind, path)
        scalar = summary.value.add(tag=tag)
        scalar.tensor.dtype = types_pb2.DT_FLOAT
        scalar.tensor.tensor_shape.SetInParent()  # a scalar: a shape with no dimensions
        scalar.tensor.float_val.append(float(value))
        scalar.metadata.CopyFrom(_scalar_metadata(tag))
    if record.histogram is not None:
        tag = tags.tag(tags.DISTRIBUTION, path)
        rows = np.ascontiguousarray(record.histogram, "<f8")
        entry = summary.value.add(tag=tag)
        entry.tensor.dtype = types_pb2.DT_DOUBLE
        for size in rows.shape:
            entry.tensor.tensor_shape.dim.add(size=size)
        entry.tensor.tensor_content = rows.tobytes()
        entry.metadata.CopyFrom(_histogram_metadata(tag))
    if record.info is not None:
        tag = tags.tag(tags.LAYER, path)
        _strings(summary, tag, [record.info.to_json().encode()], _tbviz_metadata(tag), scalar=True)
    if record.findings is not None:
        tag = tags.tag(tags.HEALTH, path)
        text = tags.health_json(record.findings).encode()
        _strings(summary, tag, [text], _tbviz_metadata(tag), scalar=True)
    return summary.SerializeToString()


def scalar_summary(tag: str, value: float) -> bytes:
    """One scalar as ``tf.summary.scalar`` writes it (Keras' ``epoch_loss``, say), serialized."""
    summary = summary_pb2.Summary()
    scalar = summary.value.add(tag=tag)
    scalar.tensor.dtype = types_pb2.DT_FLOAT
    scalar.tensor.tensor_shape.SetInParent()
    scalar.tensor.float_val.append(float(value))
    scalar.metadata.CopyFrom(_scalar_metadata(tag))
    return summary.SerializeToString()


def _strings(
    summary, tag: str, strings: list[bytes], metadata, *, scalar: bool = False
) -> None:
    value = summary.value.add(tag=tag)
    value.tensor.dtype = types_pb2.DT_STRING
    if scalar:
        value.tensor.tensor_shape.SetInParent()
    else:
        value.tensor.tensor_shape.dim.add(size=len(strings))
    value.tensor.string_val.extend(strings)
    value.metadata.CopyFrom(metadata)


# The plugin metadata tf.summary writes with each value: the same few for a layer at
# every epoch, so each is made once.


@functools.lru_cache(maxsize=4096)
def _image_metadata(description: str) -> summary_pb2.SummaryMetadata:
    return image_metadata.create_summary_metadata(None, description)


@functools.lru_cache(maxsize=4096)
def _scalar_metadata(display_name: str) -> summary_pb2.SummaryMetadata:
    return scalar_metadata.create_summary_metadata(display_name, "")


@functools.lru_cache(maxsize=4096)
def _histogram_metadata(display_name: str) -> summary_pb2.SummaryMetadata:
    return histogram_metadata.create_summary_metadata(display_name, "")


@functools.lru_cache(maxsize=4096)
def _tbviz_metadata(display_name: str) -> summary_pb2.SummaryMetadata:
    metadata = summary_pb2.SummaryMetadata(display_name=display_name)
    metadata.plugin_data.plugin_name = tags.PLUGIN_NAME
    metadata.plugin_data.content = f'{{"version": {tags.LAYER_INFO_VERSION}}}'.encode()
    metadata.data_class = summary_pb2.DATA_CLASS_TENSOR
    return metadata
