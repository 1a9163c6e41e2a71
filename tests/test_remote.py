"""Log directories in object storage, against real servers on loopback.

An S3 API server (moto's, from ``moto[server]``: the one s3fs's own tests use)
and a Google Cloud Storage emulator (``gcp-storage-emulator``) run in this
process on ports the OS picks. The environment points s3fs and boto3
(``AWS_ENDPOINT_URL``) and gcsfs (``STORAGE_EMULATOR_HOST``) at them, in this
process and in every process a test starts (``tbviz``, ``tensorboard``).
Models are trained with ``log_dir`` in a bucket on every Keras backend, and the
logs are read back by tbviz's reader, ``tbviz export``, ``tbviz report`` and a
real TensorBoard: one without TensorFlow (``tensorboard --logdir s3://...``),
and ``tbviz board`` where TensorFlow is installed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import warnings
from pathlib import Path

import fsspec
import keras
import numpy as np
import pytest
from _cli_support import Board, quiet_env, run_tbviz
from _tensorboard_support import CommandLineServer
from conftest import BACKEND, small_cnn
from tensorboard.compat.proto import event_pb2
from test_event_file import layer_pictures, records_in

import tbviz
from tbviz.cli import report
from tbviz.io import fs, tags
from tbviz.io.reader import event_files, existing_event_files, read_run
from tbviz.io.summaries import LayerRecord
from tbviz.io.writer import EventFileWriter, RunWriter

BUCKET = "tbviz"
#: The secret key the S3 server is given: nothing tbviz prints or writes may hold it.
SECRET = "tbviz-test-secret-5b1e9c"
LAYERS = ["conv_a", "pool_a", "conv_b"]  # small_cnn's default selection
EPOCHS = 3
PALETTE = np.stack([np.arange(256)] * 3, 1).astype(np.uint8)


def forget_file_systems() -> None:
    """Drops fsspec's cached file systems, so that the next one reads the environment afresh."""
    for protocol in ("s3", "gs"):
        fsspec.get_filesystem_class(protocol).clear_instance_cache()


class S3Server:
    """moto's S3 API server in this process, on loopback; `stop` and `start` keep its buckets."""

    def __init__(self) -> None:
        self.port = 0  # the OS picks one; a restart takes the same
        self.start()

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        self.port = self._server.get_host_and_port()[1]

    def stop(self) -> None:
        self._server.stop()  # closes the listening socket: connections are refused

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A real S3 API server with a bucket, and the environment pointing every client at it."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = S3Server()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL", server.endpoint)  # s3fs, and boto3 in TensorBoard
        patch.setenv("AWS_ACCESS_KEY_ID", "tbviz-test-key")
        patch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        # A refused connection fails at once instead of after botocore's 5 tries: the tests of
        # failures stay short. (A user's retry settings are the file system's business.)
        patch.setenv("AWS_MAX_ATTEMPTS", "1")
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))  # unsent objects
        patch.delenv("S3_ENDPOINT", raising=False)
        forget_file_systems()
        fsspec.filesystem("s3").mkdir(BUCKET)
        yield server
        server.stop()
    forget_file_systems()


@pytest.fixture(scope="module")
def gcs():
    """A Google Cloud Storage emulator with a bucket; gcsfs pointed at it."""
    from gcp_storage_emulator.server import create_server

    logging.getLogger("gcsfs").setLevel(logging.ERROR)  # "could not determine bucket type"
    server = create_server("127.0.0.1", 0, in_memory=True)
    server.start()
    port = server._api._httpd.server_address[1]  # the port the OS picked for port 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        forget_file_systems()
        fsspec.filesystem("gs").mkdir(BUCKET)
        yield
        server.stop()
    forget_file_systems()


def arrays():
    rng = np.random.default_rng(0)
    x = rng.random((32, 12, 12, 1), dtype=np.float32)
    return x, rng.integers(0, 3, 32), x[:3]


def fit(log_dir: str, epochs: int, *more_callbacks, logger=None) -> list[str]:
    """Trains `small_cnn` with an ActivationLogger writing to `log_dir`; returns tbviz's warnings."""
    x, y, probe = arrays()
    logger = logger or tbviz.ActivationLogger(probe, log_dir=log_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small_cnn().fit(
            x, y, epochs=epochs, batch_size=16, verbose=0, callbacks=[logger, *more_callbacks]
        )
    return [str(w.message) for w in caught if str(w.message).startswith("tbviz.")]


def steps_by_tag(result) -> dict[str, list[int]]:
    return {tag: [item.step for item in items] for tag, items in result.images.items()}


def every_epoch(epochs: int) -> dict[str, list[int]]:
    return {tags.tag(tags.IMAGE, layer): list(range(epochs)) for layer in LAYERS}


def assert_one_object_per_epoch(run: str, epochs: int) -> None:
    """One event file per logged epoch, holding that epoch only, named in the order made."""
    files = event_files(run)
    names = [url.rsplit("/", 1)[1] for url in files]
    assert len(files) == epochs and names == sorted(names), names  # text order is TensorBoard's
    for step, url in enumerate(files):
        version, *events = records_in(fs.read(url))
        assert event_pb2.Event.FromString(version).file_version == "brain.Event:2"
        assert {event_pb2.Event.FromString(e).step for e in events} == {step}


def wait_for(get, ready, what: str, timeout: float = 90):
    """Calls ``get()`` until ``ready(value)``; fails naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if ready(value):
            return value
        assert time.monotonic() < deadline, f"{what} never came; last: {value!r}"
        time.sleep(0.3)


def get_json(server, path: str):
    status, _, body = server.get(path)
    return json.loads(body) if status == 200 else None


@pytest.fixture(scope="module")
def s3_run(s3):
    """A model trained on this backend for 3 epochs with log_dir in the bucket: (log_dir, warnings)."""
    log_dir = f"s3://{BUCKET}/{BACKEND}/fit"
    return log_dir, fit(log_dir, EPOCHS)


def test_fit_to_s3_writes_one_object_per_epoch_read_back_whole(s3_run):
    """fit() with log_dir in an S3 bucket: no warning, one complete new event file per logged epoch, every epoch of every layer read back by tbviz's reader."""
    log_dir, caught = s3_run
    assert caught == []
    run = f"{log_dir}/{tags.RUN_NAME}"
    assert_one_object_per_epoch(run, EPOCHS)
    result = read_run(run)
    assert result.problems == []
    assert steps_by_tag(result) == every_epoch(EPOCHS)
    assert {len(item.pngs) for items in result.images.values() for item in items} == {3}
    assert not list(Path(os.environ["XDG_CACHE_HOME"]).rglob("events.out.tfevents.*"))


def test_export_and_report_read_every_epoch_from_s3(s3_run, tmp_path):
    """`tbviz export s3://...` writes every epoch's logged PNG byte for byte; `tbviz report` reads every epoch; no credential in their output."""
    log_dir, _ = s3_run
    result = read_run(f"{log_dir}/{tags.RUN_NAME}")
    process = run_tbviz("export", log_dir, "--out", str(tmp_path))
    assert process.returncode == 0, process.stderr
    assert SECRET not in process.stdout + process.stderr
    for layer in LAYERS:
        for item in result.images[tags.tag(tags.IMAGE, layer)]:
            for probe, png in enumerate(item.pngs):
                path = tmp_path / tags.RUN_NAME / layer / f"probe{probe}" / f"epoch{tags.epoch_number(item.step):04d}.png"
                assert path.read_bytes() == png
    (reported,), problems = report.report(log_dir)
    assert (reported.run, reported.steps, problems) == (tags.RUN_NAME, list(range(EPOCHS)), [])


def test_plain_tensorboard_without_tensorflow_serves_every_epoch_from_s3(s3_run, monkeypatch):
    """`tensorboard --logdir s3://...` where TensorFlow is not installed, no flag: the stock Images dashboard and the ACTIVATIONS tab serve every epoch's pictures, byte for byte."""
    log_dir, _ = s3_run
    result = read_run(f"{log_dir}/{tags.RUN_NAME}")
    monkeypatch.setenv("TBVIZ_TEST_UNIMPORTABLE", "tensorflow")  # TensorBoard falls back to boto3
    server = CommandLineServer(log_dir)
    try:
        run = tags.RUN_NAME
        for layer in LAYERS:
            tag = tags.tag(tags.IMAGE, layer)
            query = urllib.parse.urlencode({"run": run, "tag": tag, "sample": 2})
            entries = wait_for(
                lambda q=query: get_json(server, f"/data/plugin/images/images?{q}"),
                lambda value: value and [e["step"] for e in value] == list(range(EPOCHS)),
                f"every epoch of {tag} in the Images dashboard",
            )
            for entry, item in zip(entries, result.images[tag], strict=True):
                status, _, png = server.get(f"/data/plugin/images/individualImage?{entry['query']}")
                assert (status, png) == (200, item.pngs[2])
        tab = "/data/plugin/activations"
        runs = wait_for(lambda: get_json(server, f"{tab}/runs"), bool, "the tab's runs")
        assert runs["runs"] == [run] and runs["notices"] == []
        layers = get_json(server, f"{tab}/run?run={run}")["layers"]
        assert [(entry["name"], entry["steps"]) for entry in layers] == [
            (layer, list(range(EPOCHS))) for layer in LAYERS
        ]
        last = result.images[tags.tag(tags.IMAGE, "conv_b")][-1]
        status, _, png = server.get(f"{tab}/picture?run={run}&layer=conv_b&step={EPOCHS - 1}&sample=1")
        assert (status, png) == (200, last.pngs[1])
    finally:
        server.close()
    assert SECRET not in "".join(server.output)


def test_server_down_mid_run_then_back_loses_no_epoch(s3):
    """The S3 server stops after epoch 1 and starts again after epoch 3: fit() goes on, a warning names the URL and the epochs, and at the end every epoch is in the bucket, once."""
    x, y, probe = arrays()
    log_dir = f"s3://{BUCKET}/{BACKEND}/outage"
    run = f"{log_dir}/{tags.RUN_NAME}"
    logger = tbviz.ActivationLogger(probe, log_dir=log_dir)

    class Outage(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                s3.stop()
            elif epoch == 2:  # an upload has met the stopped server: start it again
                wait_for(lambda: logger._writer.upload_failures, bool, "a failed upload", 120)
                s3.start()

    caught = fit(log_dir, 4, Outage(), logger=logger)
    failed = [m for m in caught if "could not upload" in m]
    late = [m for m in caught if m.endswith("after all")]
    assert failed and late, caught
    waiting: set[str] = set()
    for i, message in enumerate(failed):
        match = re.fullmatch(
            r"tbviz\.ActivationLogger: could not upload epochs? ([\d, ]+) to (\S+) \((\w+): .*\); "
            r"kept in (\S+), retried in the background and with the next epoch",
            message,
        )
        assert match and match[2] == run, message
        assert i or match[3] == "EndpointConnectionError", message  # refused: the server is down
        waiting.update(match[1].split(", "))
    assert "2" in waiting  # logged while the server was down
    uploaded: set[str] = set()
    for message in late:
        match = re.fullmatch(
            rf"tbviz\.ActivationLogger: uploaded epochs? ([\d, ]+) to {re.escape(run)} after all",
            message,
        )
        assert match, message
        uploaded.update(match[1].split(", "))
    assert waiting <= uploaded, (waiting, late)
    assert_one_object_per_epoch(run, 4)
    assert steps_by_tag(read_run(run)) == every_epoch(4)
    assert not list(Path(os.environ["XDG_CACHE_HOME"]).rglob("events.out.tfevents.*"))


def test_fit_to_gcs_reads_back_every_epoch(gcs, tmp_path):
    """fit() with log_dir in a (emulated) Google Cloud Storage bucket: one object per epoch, every epoch read back by tbviz's reader and `tbviz export`."""
    log_dir = f"gs://{BUCKET}/{BACKEND}/fit"
    assert fit(log_dir, 2) == []
    run = f"{log_dir}/{tags.RUN_NAME}"
    assert_one_object_per_epoch(run, 2)
    result = read_run(run)
    assert steps_by_tag(result) == every_epoch(2)
    assert tbviz.cli.main(["export", log_dir, "--out", str(tmp_path)]) == 0
    item = result.images[tags.tag(tags.IMAGE, "conv_a")][1]
    assert (tmp_path / tags.RUN_NAME / "conv_a" / "probe0" / f"epoch{tags.epoch_number(item.step):04d}.png").read_bytes() == item.pngs[0]


# ---------------------------------------------------------------- once: no Keras involved


def write_epochs(log_dir: str, steps) -> RunWriter:
    """Writes layer "conv" at `steps` with RunWriter (one flush each), closes; returns it."""
    writer = RunWriter(log_dir)
    for step in steps:
        writer.write_epoch(step, [LayerRecord("conv", layer_pictures(step), PALETTE)])
    writer.close()
    return writer


@pytest.mark.backend_independent
def test_objects_are_named_in_order_and_never_rewritten():
    """A URL run (fsspec's memory://): each flush is a new object, their names sort as text in the order made even within one second, and no object changes afterwards."""
    memory = fsspec.filesystem("memory")
    run = f"memory://order-{os.getpid()}/logs/{tags.RUN_NAME}"
    writer = EventFileWriter(run)
    seen: dict[str, bytes] = {}
    for step in range(12):  # names of one second: a counter 10 must not sort before 9
        writer.write_summary(step, b"")
        writer.flush()
        writer.close()  # waits for the upload
        files = event_files(run)
        assert [f.rsplit("/", 1)[1] for f in files] == sorted(f.rsplit("/", 1)[1] for f in files)
        for url in files:
            data = memory.cat_file(url)
            assert seen.setdefault(url, data) == data
        assert len(files) == step + 1
    assert writer.notices() == []


@pytest.mark.backend_independent
def test_tensorboard_reads_epochs_uploaded_while_it_runs(s3, monkeypatch):
    """A TensorBoard without TensorFlow, started on 2 epochs, shows all 14 after 12 more objects land within a few seconds (no --reload_multifile)."""
    log_dir = f"s3://{BUCKET}/live"
    write_epochs(log_dir, range(2))
    monkeypatch.setenv("TBVIZ_TEST_UNIMPORTABLE", "tensorflow")
    server = CommandLineServer(log_dir, "--reload_interval=1")
    try:
        query = urllib.parse.urlencode({"run": tags.RUN_NAME, "tag": "feature_maps/conv", "sample": 0})
        path = f"/data/plugin/images/images?{query}"
        wait_for(lambda: get_json(server, path), lambda v: v and len(v) == 2, "2 epochs")
        write_epochs(log_dir, range(2, 14))
        wait_for(
            lambda: get_json(server, path),
            lambda v: v and [e["step"] for e in v] == list(range(14)),
            "all 14 epochs",
        )
    finally:
        server.close()


@pytest.mark.backend_independent
def test_tensorboard_without_tensorflow_serves_every_epoch_from_gcs(gcs, monkeypatch):
    """`tensorboard --logdir gs://... --load_fast=false` without TensorFlow (through gcsfs: the Rust loader reaches Google's endpoint only, not an emulator) serves every epoch in the Images dashboard and the tab.

    With `--reload_multifile=true`: the Python loader alone never goes back to an object it
    has passed, and on a loaded machine it showed epochs 1 and 3 of this run, never 2 (twice in three runs)
    (docs/remote.md, "Reading it back"); polling every object, it reads a missed one at the next reload."""
    log_dir = f"gs://{BUCKET}/board"
    write_epochs(log_dir, range(3))
    assert len(fsspec.filesystem("gs").ls(f"{log_dir}/{tags.RUN_NAME}")) == 3  # one object an epoch
    monkeypatch.setenv("TBVIZ_TEST_UNIMPORTABLE", "tensorflow")
    server = CommandLineServer(log_dir, "--load_fast=false", "--reload_multifile=true", "--reload_interval=1")
    try:
        query = urllib.parse.urlencode({"run": tags.RUN_NAME, "tag": "feature_maps/conv", "sample": 0})
        images = wait_for(
            lambda: get_json(server, f"/data/plugin/images/images?{query}"),
            lambda v: v and len(v) == 3, "3 epochs in the Images dashboard",
        )  # fmt: skip
        assert [entry["step"] for entry in images] == [0, 1, 2]
        layers = get_json(server, f"/data/plugin/activations/run?run={tags.RUN_NAME}")["layers"]
        assert [(entry["name"], entry["steps"]) for entry in layers] == [("conv", [0, 1, 2])]
    finally:
        server.close()


class Silent:
    """A TCP server on loopback that takes every connection and never answers: a hung endpoint."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self._held.append(self._socket.accept()[0])
            except OSError:  # closed
                return

    def close(self) -> None:
        self._socket.close()
        for connection in self._held:
            connection.close()


@pytest.mark.backend_independent
def test_a_server_that_never_answers_holds_the_end_a_bounded_time(s3, monkeypatch, tmp_path):
    """A server that takes requests and never answers: closing the writer returns after TBVIZ_UPLOAD_WAIT_SECONDS, saying where the epochs wait, as complete event files; they are uploaded, once, with the next epoch written once the server answers."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    log_dir = f"s3://{BUCKET}/silent"
    writer = RunWriter(log_dir)
    silent = Silent()
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(fsspec.config.conf, "s3", {"endpoint_url": silent.endpoint})
        patch.setenv("TBVIZ_UPLOAD_WAIT_SECONDS", "0.5")
        try:
            assert existing_event_files(writer.run_dir, timeout=0.5) == []
            for step in (0, 1):
                writer.write_epoch(step, [LayerRecord("conv", layer_pictures(step), PALETTE)])
            writer.close()
        finally:
            silent.close()  # the request under way fails now
    (notice,) = writer.notices()
    match = re.fullmatch(
        rf"epochs 1, 2 not uploaded to {re.escape(writer.run_dir)} after waiting 0\.5 s at "
        r"the end of training; they are kept in (\S+) \(complete event files, named as in the "
        r"run: `tbviz export` reads them, and copying them into \S+ completes the run\)\. "
        r"They are uploaded with the next epoch this process logs there\.",
        notice,
    )
    assert match, notice
    kept = read_run(match[1])
    assert (kept.problems, steps_by_tag(kept)) == ([], {"feature_maps/conv": [0, 1]})
    writer.write_epoch(2, [LayerRecord("conv", layer_pictures(2), PALETTE)])
    writer.close()  # the S3 server answers again
    assert_one_object_per_epoch(writer.run_dir, 3)
    assert steps_by_tag(read_run(writer.run_dir)) == {"feature_maps/conv": [0, 1, 2]}
    assert not list(Path(match[1]).iterdir())


@pytest.mark.backend_independent
def test_credentials_in_a_url_are_never_shown(s3, monkeypatch, tmp_path):
    """A URL carrying a user name and password: tbviz's messages about it (refused upload, unreadable log dir) show it without them."""
    monkeypatch.setenv("TBVIZ_UPLOAD_WAIT_SECONDS", "0")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    password = "pa55-" + SECRET
    url = f"s3://tbvizkey:{password}@{BUCKET}/creds"
    writer = RunWriter(url)
    writer.write_epoch(0, [LayerRecord("conv", layer_pictures(0), PALETTE)])
    wait_for(lambda: writer.upload_failures, bool, "a refused upload")
    writer.close()
    messages = writer.notices()
    process = run_tbviz("export", url, "--out", str(tmp_path))
    assert messages and process.returncode == 2
    for text in [*messages, process.stderr, process.stdout]:
        assert password not in text and "tbvizkey" not in text
    assert f"s3://{BUCKET}/creds/{tags.RUN_NAME}" in messages[0]


@pytest.mark.backend_independent
def test_a_url_without_its_file_system_is_refused_before_training(tmp_path, capsys):
    """log_dir az://... without adlfs, or any URL without fsspec: ActivationLogger refuses it, naming what to install; so does `tbviz export`; `tbviz demo` takes local directories only."""
    with pytest.raises(ValueError, match=r"no file system for az:// URLs is installed .*expected pip install adlfs\. Received: 'az://box/logs'"):
        tbviz.ActivationLogger(np.zeros((1, 4, 4, 1)), log_dir="az://box/logs")
    env = {**quiet_env(), "TBVIZ_TEST_UNIMPORTABLE": "fsspec"}
    process = run_script("tbviz", "export", "s3://bucket/logs", "--out", str(tmp_path), env=env)
    assert process.returncode == 2 and process.stderr.strip().endswith(
        "'s3://bucket/logs' is a URL, which tbviz opens through fsspec, and fsspec is not installed; "
        "expected pip install 'tbviz[remote]' (fsspec, s3fs, gcsfs), or the file system of the URL's "
        "protocol (s3fs) and fsspec. Received: 's3://bucket/logs'"
    ), process.stderr
    assert tbviz.cli.main(["demo", "--logdir", "s3://bucket/logs"]) == 2  # its losses go through TensorFlow
    assert "tbviz demo: error: --logdir must be a local directory" in capsys.readouterr().err


@pytest.mark.tensorflow_only  # what TensorBoard does where TensorFlow is installed
def test_where_tensorflow_cannot_open_s3_tbviz_board_serves_it(s3):
    """TensorFlow installed: `tensorboard --logdir s3://...` says to run `tbviz board`, which serves every epoch in the Images dashboard and the tab."""
    log_dir = f"s3://{BUCKET}/board"
    write_epochs(log_dir, range(3))
    refused = run_script("tensorboard", "--logdir", log_dir, "--port", "0")
    assert f"    tbviz board {log_dir}\n" in refused.stderr, refused.stderr[-3000:]
    assert "tbviz: TensorBoard reads --logdir through TensorFlow here, whose file systems do not include s3://" in refused.stderr
    board = Board(log_dir)
    try:
        query = urllib.parse.urlencode({"run": tags.RUN_NAME, "tag": "feature_maps/conv", "sample": 0})
        images = board.wait_for(f"data/plugin/images/images?{query}", lambda v: len(v) == 3)
        assert [entry["step"] for entry in images] == [0, 1, 2]
        layers = board.wait_for(
            f"data/plugin/activations/run?run={tags.RUN_NAME}", lambda v: bool(v["layers"])
        )["layers"]
        assert [(entry["name"], entry["steps"]) for entry in layers] == [("conv", [0, 1, 2])]
    finally:
        status, _, stderr = board.stop()
    assert SECRET not in board.first_line + stderr


def run_script(program: str, *args: str, env: dict[str, str] | None = None):
    """Runs the installed console script `program` (beside tbviz's), as a user would."""
    script = str(Path(sys.executable).with_name(program))
    return subprocess.run(
        [script, *args], capture_output=True, text=True, timeout=180, env=env or quiet_env()
    )
