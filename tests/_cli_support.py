"""Shared by the tests of the ``tbviz`` command: logs to read and a way to run the command.

`write_log` writes event files by hand, with TensorBoard's own writer and the
documented tag scheme only (no tbviz writer code), the way any earlier version
of `ActivationLogger` wrote them. `demo_log` trains the real demo once per test
session through the real command.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.util import tensor_util

from tbviz import metadata

DEMO_EPOCHS = 2
DEMO_LAYERS = ["conv1", "pool1", "conv2", "pool2"]
DEMO_PROBES = 4
TBVIZ = str(Path(sys.executable).with_name("tbviz"))


def picture_png(width: int, height: int, step: int, probe: int) -> bytes:
    """A PNG that differs for every step and probe, with the step number drawn on it."""
    image = Image.new("RGB", (width, height), ((40 * step) % 256, (90 * probe) % 256, 128))
    ImageDraw.Draw(image).text((2, 2), str(step), fill=(255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_log(
    run_dir: str | os.PathLike,
    layers: dict[str, tuple[int, int]],
    steps: range | list[int],
    probes: int = 2,
    *,
    metadata_on_first_step_only: bool = False,
) -> str:
    """Writes `feature_maps/<layer>` image summaries (``{layer: (width, height)}``) for `steps`.

    Returns the event file's path. With `metadata_on_first_step_only`, a tag's
    summary metadata is written on its first event only, as TF1 writers do.
    """
    os.makedirs(run_dir, exist_ok=True)
    before = set(Path(run_dir).glob("events.out.tfevents.*"))
    writer = EventFileWriter(os.fspath(run_dir))
    for index, step in enumerate(steps):
        for order, (layer, (width, height)) in enumerate(layers.items()):
            tag = metadata.tag(metadata.IMAGE, layer)
            pngs = [picture_png(width, height, step, p) for p in range(probes)]
            value = summary_pb2.Summary.Value(
                tag=tag,
                tensor=tensor_util.make_tensor_proto(
                    [str(width).encode(), str(height).encode(), *pngs]
                ),
            )
            if index == 0 or not metadata_on_first_step_only:
                value.metadata.CopyFrom(
                    image_metadata.create_summary_metadata(display_name=tag, description="")
                )
            writer.add_event(
                event_pb2.Event(
                    wall_time=1.7e9 + step + order * 1e-3,  # layers in model order
                    step=step,
                    summary=summary_pb2.Summary(value=[value]),
                )
            )
    writer.close()
    (path,) = set(Path(run_dir).glob("events.out.tfevents.*")) - before
    return str(path)


def write_keras_log(run_dir: str | os.PathLike, tag: str, values: list[float]) -> None:
    """A run with scalars only, as Keras' TensorBoard callback writes ``train/``."""
    writer = EventFileWriter(os.fspath(run_dir))
    for step, number in enumerate(values):
        value = summary_pb2.Summary.Value(tag=tag, simple_value=number)
        writer.add_event(event_pb2.Event(step=step, summary=summary_pb2.Summary(value=[value])))
    writer.close()


def run_tbviz(*args: str, timeout: float = 120, **options) -> subprocess.CompletedProcess:
    """Runs the installed ``tbviz`` console script as a user would; captures its output."""
    assert os.path.exists(TBVIZ), f"the tbviz console script is not installed at {TBVIZ}"
    return subprocess.run(
        [TBVIZ, *args], capture_output=True, text=True, timeout=timeout, env=quiet_env(), **options
    )


def quiet_env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


def assert_no_traceback(process: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in process.stderr, process.stderr
    assert "Traceback" not in process.stdout, process.stdout


_demo_cache: dict[str, object] = {}


@pytest.fixture(scope="session")
def demo_log(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """``tbviz demo --epochs 2`` run once per session: ``(logdir, finished process)``."""
    if "log" not in _demo_cache:  # test modules import this fixture separately
        logdir = tmp_path_factory.mktemp("demo") / "logs" / "mnist"
        process = run_tbviz(
            "demo", "--logdir", str(logdir), "--epochs", str(DEMO_EPOCHS), "--source", "shipped",
            timeout=300,
        )  # fmt: skip
        assert process.returncode == 0, process.stderr[-3000:]
        _demo_cache["log"] = (logdir, process)
    return _demo_cache["log"]


def _default_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Board:
    """``tbviz board`` running in a subprocess."""

    def __init__(self, logdir: str | os.PathLike, *extra: str) -> None:
        self.process = subprocess.Popen(
            [TBVIZ, "board", os.fspath(logdir), "--port", "0", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=quiet_env(),
            # Ctrl+C as in a terminal: a test run started in the background by a script
            # inherits SIGINT ignored, and Python then never raises KeyboardInterrupt.
            preexec_fn=_default_sigint,
        )
        self.first_line = self.process.stdout.readline()
        match = re.search(r"(http://\S+/)", self.first_line)
        if match is None:
            self.stop()
            raise AssertionError(
                f"tbviz board printed no URL: {self.first_line!r}\n{self.process.stderr.read()}"
            )
        self.url = match.group(1)

    def get(self, path: str, timeout: float = 10) -> bytes:
        with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=timeout) as response:
            return response.read()

    def wait_for(self, path: str, ready, timeout: float = 60):
        """GETs `path` (JSON) until ``ready(value)`` is true; returns the value."""
        import json

        deadline = time.monotonic() + timeout
        while True:
            value = json.loads(self.get(path))
            if ready(value):
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} never got ready; last answer: {value!r}")
            time.sleep(0.5)

    def stop(self) -> tuple[int, str, str]:
        """Ctrl+C, as a user stops it; returns ``(exit status, stdout rest, stderr)``."""
        import signal

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            out, err = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate()
        return self.process.returncode, out, err
