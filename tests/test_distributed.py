"""ActivationLogger under tf.distribute: MirroredStrategy and MultiWorkerMirroredStrategy.

Each run is a fresh Python process (tests/_multiworker_worker.py): splitting the
CPU into logical devices must happen before TensorFlow initialises its
devices, and a multi-worker cluster needs one process per worker.

How close the pictures of a distributed run must be to a single-process
run's: the runs start from the same weights and see the same samples in
every step; the only difference is the order in which a step's gradient is
summed (two partial sums all-reduced instead of one sum), so weights differ
by a few float32 ULPs (relative ~1e-7) after 8 steps. Such a difference moves
a normalised value across one of the colour map's 256 bins only when it lies
within ~1e-6 of a bin edge: a handful of pixels one colour step off. The
tests allow at most 4 levels per channel (one or two steps of viridis) on at
most 1% of the pixels, and require everything else to be exact.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import pictures_at, read_activations
from tbviz import metadata

WORKER = os.path.join(os.path.dirname(__file__), "_multiworker_worker.py")
LAYERS = ["conv_a", "pool_a", "conv_b", "gap"]
# Picture sizes (width, height) for the worker's 16x16 input: conv_a 14x14x8 in a
# 2x4 grid, pool_a 7x7x8 in 2x4, conv_b 5x5x4 in 2x2, gap 4 units in a 2x2 block.
SIZES = {"conv_a": (59, 29), "pool_a": (31, 15), "conv_b": (11, 11), "gap": (2, 2)}
PROBES = 3
TIMEOUT = 240


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _start(mode: str, log_dir, result, tf_config: dict | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen(
        [sys.executable, WORKER, mode, str(log_dir), str(result)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(processes: dict[str, subprocess.Popen]) -> None:
    """Waits for every process; fails with the output of any that failed."""
    failures = []
    try:
        for name, process in processes.items():
            output, _ = process.communicate(timeout=TIMEOUT)
            if process.returncode != 0:
                failures.append(f"{name} exited with {process.returncode}:\n{output[-3000:]}")
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert not failures, "\n\n".join(failures)


def _assert_logged(log_dir) -> None:
    result = read_activations(log_dir)
    assert not result.problems
    assert set(result.images) == {metadata.tag(metadata.IMAGE, p) for p in LAYERS}
    for path in LAYERS:
        steps = result.images[metadata.tag(metadata.IMAGE, path)]
        assert [s.step for s in steps] == [0, 1]
        assert all(len(s.pngs) == PROBES for s in steps)
        assert all((s.width, s.height) == SIZES[path] for s in steps)


def _assert_same_pictures(log_dir, reference_dir) -> None:
    ours, theirs = read_activations(log_dir), read_activations(reference_dir)
    for path in LAYERS:
        for step in (0, 1):
            for a, b in zip(pictures_at(ours, path, step), pictures_at(theirs, path, step)):
                assert a.shape == b.shape
                difference = np.abs(a.astype(int) - b.astype(int))
                assert difference.max() <= 4, (path, step, difference.max())
                assert (difference > 0).mean() <= 0.01, (path, step, (difference > 0).mean())


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    """Under MirroredStrategy (CPU split in two) fit() logs every layer, as a single-device run does."""
    processes = {
        "mirrored": _start("fit-mirrored", tmp_path / "mirrored", tmp_path / "mirrored.json"),
        "single": _start("fit-single", tmp_path / "single", tmp_path / "single.json"),
    }
    _finish(processes)
    mirrored = json.loads((tmp_path / "mirrored.json").read_text())
    single = json.loads((tmp_path / "single.json").read_text())
    assert mirrored["replicas"] == 2 and len(mirrored["devices"]) == 2
    assert mirrored["active"] and mirrored["built"]
    np.testing.assert_allclose(mirrored["loss"], single["loss"], rtol=1e-5)
    _assert_logged(tmp_path / "mirrored")
    _assert_same_pictures(tmp_path / "mirrored", tmp_path / "single")


@pytest.mark.slow
def test_multi_worker_only_the_chief_logs(tmp_path):
    """Two MultiWorkerMirroredStrategy workers: only the chief builds and writes, and its images equal a single worker's."""
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    processes = {
        f"worker{i}": _start(
            "loop-worker",
            tmp_path / f"worker{i}",
            tmp_path / f"worker{i}.json",
            {"cluster": cluster, "task": {"type": "worker", "index": i}},
        )
        for i in range(2)
    }
    processes["single"] = _start("loop-single", tmp_path / "single", tmp_path / "single.json")
    _finish(processes)
    chief, other = (json.loads((tmp_path / f"worker{i}.json").read_text()) for i in range(2))
    single = json.loads((tmp_path / "single.json").read_text())

    assert chief["replicas"] == other["replicas"] == 2  # one cluster of two workers
    assert chief["should_save_summary"] and not other["should_save_summary"]
    assert chief["active"] and chief["built"]
    # The non-chief did no logging work: no activation model, no step, no writer.
    assert not other["active"] and not other["built"]
    assert not (tmp_path / "worker1" / metadata.RUN_NAME).exists()
    assert not any((tmp_path / "worker1").rglob("*"))  # not one file, wherever
    assert any((tmp_path / "worker0" / metadata.RUN_NAME).glob("events.out.tfevents.*"))
    np.testing.assert_allclose(chief["loss"], single["loss"], rtol=1e-5)
    np.testing.assert_allclose(other["loss"], single["loss"], rtol=1e-5)

    _assert_logged(tmp_path / "worker0")
    _assert_same_pictures(tmp_path / "worker0", tmp_path / "single")
