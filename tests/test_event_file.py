"""Event files written without TensorFlow (`tbviz.io.writer`, `tbviz.io.summaries`).

What is written is read back three ways: tbviz's own reader, TensorBoard's
``EventAccumulator``, and record by record with TensorBoard's pure-Python
CRC-32C (independent of ``google-crc32c``). Failures are real: a file
removed under the writer, and a write refused by the operating system
(``RLIMIT_FSIZE`` in a subprocess: ``EFBIG``, as close to a full disk as a
test gets without mounting one). Subprocesses also show that writing needs no
TensorFlow and that importing the readers does not load it.
"""

import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
from tensorboard.util import tensor_util

from tbviz.io import tags
from tbviz.io.png import encode_palette_png
from tbviz.io.reader import event_files, read_run
from tbviz.io.summaries import LayerRecord
from tbviz.io.writer import EventFileWriter, RunWriter

pytestmark = pytest.mark.backend_independent  # not about the Keras backend: runs once (conftest.py)

PALETTE = np.stack([np.arange(256), 255 - np.arange(256), np.arange(256) // 2], 1).astype(np.uint8)


def layer_pictures(seed: int, count: int = 3, height: int = 5, width: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, height, width), np.uint8)


def layer_info(layer: str, step: int) -> tags.LayerInfo:
    """A `LayerInfo` that differs for every layer and step."""
    return tags.LayerInfo(
        layer_class=f"Conv{len(layer)}", output_shape=(5, 7, 3 + step), layout="maps",
        channels=3 + step, channels_shown=3, grid=(1, 3), cell=(5, 7), normalize="map",
        clip_percentile=1.0, cmap="viridis", coarse=(5, 7), samples=3,
    )  # fmt: skip


def write_two_layers(log_dir, steps=(0, 1)) -> dict:
    """Writes layers "conv" and "outer/dense" at `steps` as the logger does; returns what went in."""
    writer = RunWriter(str(log_dir))
    written = {}
    for step in steps:
        records = []
        for i, layer in enumerate(("conv", "outer/dense")):
            pictures = layer_pictures(10 * step + i)
            statistics = {tags.MEAN: np.float32(step + 0.25), tags.STD: np.float32(i + 0.5)}
            histogram = np.array([[0.0, 1.0, 3.0], [1.0, 2.0, 5.0]]) * (step + 1)
            info = layer_info(layer, step)
            records.append(LayerRecord(layer, pictures, PALETTE, info, statistics, histogram))
            written[layer, step] = (pictures, statistics, histogram, info)
        writer.write_epoch(step, records)
    writer.close()
    return written


def records(path) -> list[bytes]:
    """The records of one event file, each checked with TensorBoard's own pure-Python CRC-32C."""
    with open(path, "rb") as file:
        return records_in(file.read())


def records_in(data: bytes) -> list[bytes]:
    """The records in the bytes of an event file; see `records`."""
    result, offset = [], 0
    while offset < len(data):
        header = data[offset : offset + 8]
        (length,), (length_crc,) = struct.unpack("<Q", header), struct.unpack_from("<I", data, offset + 8)
        assert length_crc == masked_crc32c(header), f"length checksum of the record at {offset}"
        record = data[offset + 12 : offset + 12 + length]
        (data_crc,) = struct.unpack_from("<I", data, offset + 12 + length)
        assert data_crc == masked_crc32c(record), f"data checksum of the record at {offset}"
        result.append(record)
        offset += 12 + length + 4
    assert offset == len(data)
    return result


def test_layers_read_back_by_tbviz(tmp_path):
    """Tags, steps, PNG bytes, statistics, histograms, layer infos and descriptions read back exactly by tbviz's reader."""
    written = write_two_layers(tmp_path)
    result = read_run(str(tmp_path / tags.RUN_NAME))
    assert result.problems == []
    assert result.tags() == {
        f"{kind}/{layer}"
        for layer in ("conv", "outer/dense")
        for kind in (tags.IMAGE, tags.MEAN, tags.STD, tags.DISTRIBUTION, tags.LAYER)
    }
    for (layer, step), (pictures, statistics, histogram, info) in written.items():
        (image,) = [s for s in result.images[f"feature_maps/{layer}"] if s.step == step]
        assert (image.width, image.height) == (7, 5)
        assert image.pngs == [encode_palette_png(p, PALETTE) for p in pictures]
        for kind, value in statistics.items():
            assert dict(result.scalars[f"{kind}/{layer}"])[step] == float(value)
        np.testing.assert_array_equal(dict(result.histograms[f"distribution/{layer}"])[step], histogram)
        assert result.info(layer, step) == info
    for layer in ("conv", "outer/dense"):  # a tag's description: from its first step's info
        assert result.descriptions[f"feature_maps/{layer}"] == layer_info(layer, 0).description(layer)
        assert result.info(layer) == layer_info(layer, 1)  # the last step's


def test_layers_read_back_by_tensorboard(tmp_path):
    """TensorBoard's EventAccumulator (its reader checks both checksums) sees every value, exactly."""
    written = write_two_layers(tmp_path)
    accumulator = event_accumulator.EventAccumulator(
        str(tmp_path / tags.RUN_NAME), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    layers = ("conv", "outer/dense")
    assert set(accumulator.Tags()["tensors"]) == set(read_run(str(tmp_path / tags.RUN_NAME)).tags())
    assert {tags.tag(tags.LAYER, layer) for layer in layers} <= set(accumulator.Tags()["tensors"])
    assert accumulator.GetSourceWriter() == "tbviz"
    for (layer, step), (pictures, statistics, histogram, info) in written.items():
        def at(kind, layer=layer, step=step):
            (event,) = [e for e in accumulator.Tensors(f"{kind}/{layer}") if e.step == step]
            return tensor_util.make_ndarray(event.tensor_proto)

        images = at(tags.IMAGE)
        assert list(images) == [b"7", b"5", *(encode_palette_png(p, PALETTE) for p in pictures)]
        for kind, value in statistics.items():
            assert at(kind) == value
        np.testing.assert_array_equal(at(tags.DISTRIBUTION), histogram)
        plugin = accumulator.SummaryMetadata(f"feature_maps/{layer}").plugin_data.plugin_name
        assert plugin == "images"
        assert tags.LayerInfo.from_json(at(tags.LAYER).item()) == info
        layer_plugin = accumulator.SummaryMetadata(f"layer/{layer}").plugin_data.plugin_name
        assert layer_plugin == tags.PLUGIN_NAME


def test_records_are_framed_and_checksummed_as_tensorflow_writes_them(tmp_path):
    """One file named as TF2 names its own; version event first; each event byte-identical to protobuf's."""
    writer = EventFileWriter(str(tmp_path))
    summaries = []
    for step, size in ((0, 3), (7, 200), (2**40, 20000)):  # varint lengths of 1, 2 and 3 bytes
        summary = summary_pb2.Summary()
        summary.value.add(tag="t", tensor=tensor_util.make_tensor_proto(np.array([b"x" * size], object)))
        summaries.append((step, summary))
        writer.write_summary(step, summary.SerializeToString(), wall_time=1234.5 + step)
    writer.close()
    (path,) = event_files(str(tmp_path))
    pattern = rf"events\.out\.tfevents\.\d{{10}}\.{re.escape(socket.gethostname())}\.{os.getpid()}\.\d+\.v2"
    assert re.fullmatch(pattern, os.path.basename(path))
    version, *events = records(path)
    assert event_pb2.Event.FromString(version).file_version == "brain.Event:2"
    assert events == [
        event_pb2.Event(wall_time=1234.5 + step, step=step, summary=summary).SerializeToString()
        for step, summary in summaries
    ]


def test_each_writer_has_its_own_file_even_within_one_second(tmp_path):
    """Writers opened in quick succession get distinct files, each starting with its version event."""
    for step in range(3):
        writer = EventFileWriter(str(tmp_path))
        writer.write_summary(step, b"")
        writer.close()
    paths = event_files(str(tmp_path))
    assert len(paths) == 3
    for step, path in enumerate(paths):
        version, event = records(path)
        assert event_pb2.Event.FromString(version).file_version == "brain.Event:2"
        assert event_pb2.Event.FromString(event).step == step


def test_nothing_written_no_file(tmp_path):
    """A writer that writes nothing creates no directory and no file; flush and close are no-ops."""
    writer = EventFileWriter(str(tmp_path / "logs"))
    writer.flush()
    writer.close()
    RunWriter(str(tmp_path / "logs")).close()
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("how", ["file", "directory", "replaced"])
def test_removed_file_is_reported_and_writing_goes_on_in_a_new_file(tmp_path, how):
    """The event file removed (alone, with its directory, or replaced): flush names it; the next write starts a new file."""
    writer = EventFileWriter(str(tmp_path / "run"))
    writer.write_summary(0, b"")
    writer.flush()
    (path,) = event_files(str(tmp_path / "run"))
    if how == "directory":
        shutil.rmtree(tmp_path / "run")
    else:
        os.remove(path)
        if how == "replaced":
            open(path, "wb").close()
    writer.write_summary(1, b"")
    with pytest.raises(OSError, match=f"^the event file {re.escape(path)} was removed; what was written since the last flush is lost$"):
        writer.flush()
    writer.write_summary(2, b"")
    writer.close()
    (new,) = set(event_files(str(tmp_path / "run"))) - {path}
    assert [event_pb2.Event.FromString(r).step for r in records(new)[1:]] == [2]


def test_file_cut_by_another_program_is_reported(tmp_path):
    """The event file truncated under the writer: flush says so, naming it; the next write starts a new file."""
    writer = EventFileWriter(str(tmp_path))
    writer.write_summary(0, b"")
    (path,) = event_files(str(tmp_path))
    os.truncate(path, 10)
    with pytest.raises(OSError, match=f"^the event file {re.escape(path)} is shorter than what was written"):
        writer.flush()
    writer.write_summary(1, b"")
    writer.close()
    assert len(event_files(str(tmp_path))) == 2


def run_python(code: str, *, block_tensorflow: bool = False) -> str:
    """Runs `code` in a fresh Python (optionally where TensorFlow cannot be imported); returns its output."""
    prelude = "import sys; sys.modules['tensorflow'] = None\n" if block_tensorflow else ""
    process = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr
    return process.stdout


def test_write_refused_by_the_system_is_reported_and_the_file_stays_valid(tmp_path):
    """A write over the file-size limit (EFBIG): OSError naming the file, the epoch cut off, later epochs go on in it."""
    output = run_python(f"""
        import os, resource, signal
        import numpy as np
        from tbviz.io.reader import event_files, read_run
        from tbviz.io.summaries import LayerRecord
        from tbviz.io.writer import RunWriter

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
        writer = RunWriter({str(tmp_path)!r})
        pictures, palette = np.full((4, 32, 32), 7, np.uint8), np.zeros((256, 3), np.uint8)

        def epoch(step):
            writer.write_epoch(step, [LayerRecord(layer, pictures, palette) for layer in ("a", "b")])

        epoch(0)
        (path,) = event_files(writer.run_dir)
        good = os.path.getsize(path)
        # Room for layer a's record of epoch 1 but not for layer b's.
        resource.setrlimit(resource.RLIMIT_FSIZE, (good + 3000, resource.RLIM_INFINITY))
        try:
            epoch(1)
        except OSError as error:
            print(error)
        print(os.path.getsize(path) - good)
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
        epoch(2)
        writer.close()
        result = read_run(writer.run_dir)
        print(event_files(writer.run_dir) == [path], result.problems)
        print([[s.step for s in result.images["feature_maps/" + layer]] for layer in ("a", "b")])
    """)
    (path,) = event_files(str(tmp_path / tags.RUN_NAME))
    assert output.splitlines() == [
        f"the event file {path} could not be written (File too large); "
        "what was written since the last flush is lost",
        "0",  # cut back to the last flush: layer a's record of epoch 1 is gone too
        "True []",
        "[[0, 2], [0, 2]]",
    ]


def test_file_refused_at_creation_is_reported_and_removed(tmp_path):
    """Not even the version event fits (EFBIG): OSError naming the file, and no file is left."""
    output = run_python(f"""
        import os, resource, signal
        from tbviz.io.writer import EventFileWriter

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (10, resource.RLIM_INFINITY))
        writer = EventFileWriter({str(tmp_path)!r})
        try:
            writer.write_summary(0, b"")
        except OSError as error:
            print(error)
        print(os.listdir({str(tmp_path)!r}))
    """)
    message, listing = output.splitlines()
    assert re.fullmatch(
        rf"the event file {re.escape(str(tmp_path))}/events\.out\.tfevents\.\S+\.v2 could not be "
        r"written \(File too large\); what was written since the last flush is lost",
        message,
    )
    assert listing == "[]"


def test_layer_written_and_read_back_where_tensorflow_cannot_be_imported(tmp_path):
    """With TensorFlow unimportable, RunWriter writes and tbviz and TensorBoard read back; a URL without its file system is refused naming the package."""
    output = run_python(f"""
        import numpy as np
        from tensorboard.backend.event_processing import event_accumulator
        from tbviz.io import fs
        from tbviz.io.png import encode_palette_png
        from tbviz.io.reader import read_run
        from tbviz.io.summaries import LayerRecord
        from tbviz.io.writer import RunWriter

        writer = RunWriter({str(tmp_path)!r})
        pictures, palette = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4), np.zeros((256, 3), np.uint8)
        record = LayerRecord("conv", pictures, palette, scalars={{"mean": 0.5}}, histogram=np.ones((2, 3)))
        writer.write_epoch(5, [record])
        writer.close()
        result = read_run(writer.run_dir)
        (image,) = result.images["feature_maps/conv"]
        print(result.problems, image.step, image.pngs == [encode_palette_png(p, palette) for p in pictures])
        print(dict(result.scalars), len(result.histograms["distribution/conv"]))
        accumulator = event_accumulator.EventAccumulator(writer.run_dir, size_guidance={{"tensors": 0}})
        accumulator.Reload()
        print(sorted(accumulator.Tags()["tensors"]))
        try:
            fs.filesystem("nosuchfs://bucket/logs")
        except fs.RemoteUnavailable as error:
            print(error)
    """, block_tensorflow=True)
    lines = output.splitlines()
    assert lines[:3] == [
        "[] 5 True",
        "{'mean/conv': [(5, 0.5)]} 1",
        "['distribution/conv', 'feature_maps/conv', 'mean/conv']",
    ]
    assert re.fullmatch(
        r"no file system for nosuchfs:// URLs is installed \(.*\); expected a protocol fsspec "
        r"knows \(s3, gs, az, memory, \.\.\.\)\. Received: 'nosuchfs://bucket/logs'",
        lines[3],
    ), lines[3]


READERS = ["tbviz", "tbviz.cli", "tbviz.cli.export", "tbviz.io", "tbviz.io.reader", "tbviz.io.runs",
           "tbviz.io.writer", "tbviz.plugin", "tbviz.plugin.server"]  # fmt: skip


def test_writer_and_readers_import_without_tensorflow():
    """tbviz's writer and readers import where TensorFlow cannot be, and do not load it where it can."""
    imports = "".join(f"import {module}\n" for module in READERS)
    assert run_python(imports + "print(sys.modules['tensorflow'])", block_tensorflow=True) == "None\n"
    assert run_python("import sys\n" + imports + "print('tensorflow' in sys.modules)") == "False\n"
