"""Shared by the tests of the ``tbviz`` command: logs to read and a way to run the command.

`write_log` writes event files by hand, with TensorBoard's own writer and the
documented tag scheme only (no tbviz writer code), the way any earlier version
of `ActivationLogger` wrote them. `demo_log` trains the real demo once per test
session through the real command.
"""

from __future__ import annotations

import io
import os
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.util import tensor_util

from tbviz.io import tags

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
            tag = tags.tag(tags.IMAGE, layer)
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
    """``tbviz board`` running in a subprocess.

    Its output is read by two threads, so that waiting for a line has a deadline:
    a board that hangs is a test failure that shows what it printed, not a hung test.
    """

    def __init__(self, logdir: str | os.PathLike, *extra: str, timeout: float = 60) -> None:
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
        self._stdout: queue.Queue[str | None] = queue.Queue()  # None: end of output
        self._printed: list[str] = []  # stdout lines read so far
        self._stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self.first_line = self.readline(timeout)
        match = re.search(r"(http://\S+/)", self.first_line)
        if match is None:
            self.stop()
            raise AssertionError(f"tbviz board printed no URL: {self.first_line!r}\n{self.stderr}")
        self.url = match.group(1)

    def _read_stdout(self) -> None:
        for line in self.process.stdout:
            self._stdout.put(line)
        self._stdout.put(None)

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            self._stderr.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def readline(self, timeout: float = 60) -> str:
        """The next line the board prints ("" once it has stopped); fails after `timeout` s."""
        try:
            line = self._stdout.get(timeout=timeout)
        except queue.Empty:
            self.stop()
            raise AssertionError(
                f"tbviz board printed no line in {timeout} s; stdout so far: "
                f"{''.join(self._printed)!r}; stderr: {self.stderr!r}"
            ) from None
        if line is None:
            self._stdout.put(None)  # stays at the end
            return ""
        self._printed.append(line)
        return line

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
        """Ctrl+C, as a user stops it; returns ``(exit status, stdout not yet read, stderr)``."""
        import signal

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for reader in self._readers:
            reader.join(timeout=10)  # the pipes close with the process
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()
        rest = []
        while not self._stdout.empty() and (line := self._stdout.get_nowait()) is not None:
            rest.append(line)
        self._printed += rest
        return self.process.returncode, "".join(rest), self.stderr
