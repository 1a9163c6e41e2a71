"""ActivationLogger in distributed training: tf.distribute's MirroredStrategy and
MultiWorkerMirroredStrategy, keras.distribution on JAX across two processes, and
two ranks of a torch.distributed group.

Each run is a fresh Python process (tests/_multiworker_worker.py,
tests/_jax_multiprocess_worker.py, tests/_torch_distributed_worker.py):
splitting the CPU into logical devices must happen before TensorFlow
initialises its devices, a multi-worker cluster needs one process per worker,
and the JAX and PyTorch runs need their own KERAS_BACKEND.

How close the pictures of a distributed run must be to a single-process
run's: the runs start from the same weights and see the same samples in
every step; the only difference is the order in which a step's gradient is
summed (two partial sums all-reduced instead of one sum), so values differ by
float32 rounding, compounded over 8 steps: far less than the relative 1e-5
within which the tests require the losses to agree. The pictures are grey,
so each pixel reads back as one of the 254 colour levels. A value that moves
by at most 1e-5 of its map's range changes level only when it lies that close
to one of the 253 level boundaries, and then by one level: the tests allow
one level on at most 2 * 1e-5 * 253 = 0.5% of the pixels, and require all
others to be exact.

The two MultiWorkerMirroredStrategy workers bind the ports named in their
TF_CONFIG themselves; a port found free may be taken by another process
before a worker binds it (TensorFlow's gRPC server refuses to share it). The
worker then fails at once with "Could not start gRPC server" while the other
one waits for it: the cluster is stopped and started again on other ports.
The same goes for the JAX coordinator's port, which process 0 binds ("Failed
to add port to server"), and torch.distributed's, which rank 0 binds
("EADDRINUSE"); each test takes the first attempt's port itself, so that the
start-again path runs every time.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import pictures_at, read_activations

from tbviz.io import tags
from tbviz.io.tags import LEVELS

WORKER = os.path.join(os.path.dirname(__file__), "_multiworker_worker.py")
JAX_WORKER = os.path.join(os.path.dirname(__file__), "_jax_multiprocess_worker.py")
TORCH_WORKER = os.path.join(os.path.dirname(__file__), "_torch_distributed_worker.py")
LAYERS = ["conv_a", "pool_a", "conv_b", "gap"]
# Picture sizes (width, height) for the worker's 16x16 input: conv_a 14x14x8 in a
# 2x4 grid, pool_a 7x7x8 in 2x4, conv_b 5x5x4 in 2x2, gap 4 units in a 2x2 block.
SIZES = {"conv_a": (59, 29), "pool_a": (31, 15), "conv_b": (11, 11), "gap": (2, 2)}
PROBES = 3
TIMEOUT = 240
RELATIVE = 1e-5  # how closely the runs agree: the losses' tolerance
BIND_FAILURE = "Could not start gRPC server"
JAX_BIND_FAILURE = "Failed to add port to server"
TORCH_BIND_FAILURE = "EADDRINUSE"


def _free_ports(count: int) -> list[int]:
    """Ports free on every IPv4 address: TensorFlow's gRPC server binds 0.0.0.0:<port>."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _start(
    mode: str,
    log_dir,
    result,
    tf_config: dict | None = None,
    *,
    worker: str = WORKER,
    arguments: tuple = (),
    backend: str = "tensorflow",
) -> subprocess.Popen:
    """Starts a worker process; its output goes to ``<result>.out`` (a file: nothing can block)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["KERAS_BACKEND"] = backend
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    with open(f"{result}.out", "w") as output:
        return subprocess.Popen(
            [sys.executable, worker, mode, str(log_dir), str(result), *map(str, arguments)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )


def _output(process: subprocess.Popen) -> str:
    with open(f"{process.args[4]}.out") as output:
        return output.read()


def _wait(processes: dict[str, subprocess.Popen]) -> None:
    """Waits until every process has exited, one has failed, or TIMEOUT; then stops the rest."""
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            codes = [process.poll() for process in processes.values()]
            if None not in codes or any(code for code in codes):
                break
            time.sleep(0.1)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def _failures(processes: dict[str, subprocess.Popen]) -> list[str]:
    return [
        f"{name} exited with {process.returncode}:\n{_output(process)[-3000:]}"
        for name, process in processes.items()
        if process.returncode != 0
    ]


def _finish(processes: dict[str, subprocess.Popen]) -> None:
    """Waits for every process; fails with the output of any that failed or did not end."""
    _wait(processes)
    failures = _failures(processes)
    assert not failures, "\n\n".join(failures)


def _run_cluster(
    base, ports: list[int] | None = None, attempts: int = 3
) -> dict[str, subprocess.Popen]:
    """Runs two loop-workers as one cluster; on a port taken before a worker bound it, starts again.

    `ports` are those of the first attempt (later ones pick free ports). Worker i of
    attempt a writes under ``base/attempt<a>/worker<i>``. Returns the last attempt's
    workers, all exited.
    """
    for attempt in range(attempts):
        ports = ports if attempt == 0 and ports else _free_ports(2)
        cluster = {"worker": [f"localhost:{port}" for port in ports]}
        directory = base / f"attempt{attempt}"
        directory.mkdir()
        workers = {
            f"worker{i}": _start(
                "loop-worker",
                directory / f"worker{i}",
                directory / f"worker{i}.json",
                {"cluster": cluster, "task": {"type": "worker", "index": i}},
            )
            for i in range(2)
        }
        _wait(workers)
        if not any(BIND_FAILURE in _output(w) for w in workers.values() if w.returncode):
            return workers
    return workers


def _assert_logged(log_dir) -> None:
    result = read_activations(log_dir)
    assert not result.problems
    assert set(result.images) == {tags.tag(tags.IMAGE, p) for p in LAYERS}
    for path in LAYERS:
        steps = result.images[tags.tag(tags.IMAGE, path)]
        assert [s.step for s in steps] == [0, 1]
        assert all(len(s.pngs) == PROBES for s in steps)
        assert all((s.width, s.height) == SIZES[path] for s in steps)


def _levels(picture: np.ndarray) -> np.ndarray:
    """The colour level (0..253) of each pixel of a grey picture."""
    assert (picture == picture[..., :1]).all()  # grey: no NaN/Inf marker
    return np.round(picture[..., 0].astype(float) * (LEVELS - 1) / 255)


def _assert_same_pictures(log_dir, reference_dir) -> None:
    ours, theirs = read_activations(log_dir), read_activations(reference_dir)
    for path in LAYERS:
        for step in (0, 1):
            pairs = zip(pictures_at(ours, path, step), pictures_at(theirs, path, step), strict=True)
            for a, b in pairs:
                assert a.shape == b.shape
                difference = np.abs(_levels(a) - _levels(b))
                assert difference.max() <= 1, (path, step, difference.max())
                off = (difference > 0).mean()
                assert off <= 2 * RELATIVE * (LEVELS - 1), (path, step, off)


@pytest.mark.slow
@pytest.mark.tensorflow_only
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
    np.testing.assert_allclose(mirrored["loss"], single["loss"], rtol=RELATIVE)
    _assert_logged(tmp_path / "mirrored")
    _assert_same_pictures(tmp_path / "mirrored", tmp_path / "single")


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_multi_worker_only_the_chief_logs(tmp_path):
    """Two MultiWorkerMirroredStrategy workers: only the chief builds and writes, and its images equal a single worker's."""
    single_process = _start("loop-single", tmp_path / "single", tmp_path / "single.json")
    # The first attempt's worker 1 gets a port another socket holds: the start-again path
    # runs every time, not only when a race happens.
    with socket.socket() as taken:
        taken.bind(("", 0))  # 0.0.0.0, where the worker's gRPC server binds
        taken.listen()
        workers = _run_cluster(tmp_path, ports=[*_free_ports(1), taken.getsockname()[1]])
    assert BIND_FAILURE in (tmp_path / "attempt0" / "worker1.json.out").read_text()
    _finish({**workers, "single": single_process})
    run = Path(workers["worker0"].args[4]).parent  # attempt1, or later after a real race
    chief, other = (json.loads((run / f"worker{i}.json").read_text()) for i in range(2))
    single = json.loads((tmp_path / "single.json").read_text())

    assert chief["replicas"] == other["replicas"] == 2  # one cluster of two workers
    assert chief["should_save_summary"] and not other["should_save_summary"]
    assert chief["active"] and chief["built"]
    # The non-chief did no logging work: no activation model, no step, no writer.
    assert not other["active"] and not other["built"]
    assert not (run / "worker1" / tags.RUN_NAME).exists()
    assert not any((run / "worker1").rglob("*"))  # not one file, wherever
    assert any((run / "worker0" / tags.RUN_NAME).glob("events.out.tfevents.*"))
    np.testing.assert_allclose(chief["loss"], single["loss"], rtol=RELATIVE)
    np.testing.assert_allclose(other["loss"], single["loss"], rtol=RELATIVE)

    _assert_logged(run / "worker0")
    _assert_same_pictures(run / "worker0", tmp_path / "single")


def _run_two_processes(
    base,
    mode: str,
    port: int | None = None,
    *,
    worker: str = "",
    backend: str = "jax",
    bind_failure: str = "",
    attempts: int = 3,
) -> dict[str, subprocess.Popen]:
    """Runs two processes of `worker` (JAX's by default) as one run; when the coordinator
    port was taken before process 0 bound it (`bind_failure` in its output), starts again
    on another. `port` is the first attempt's. Process i writes under
    ``base/attempt<a>/process<i>``."""
    worker = worker or JAX_WORKER
    bind_failure = bind_failure or JAX_BIND_FAILURE
    for attempt in range(attempts):
        (port,) = [port] if attempt == 0 and port else _free_ports(1)
        directory = base / f"attempt{attempt}"
        directory.mkdir()
        processes = {
            f"process{i}": _start(
                mode,
                directory / f"process{i}",
                directory / f"process{i}.json",
                worker=worker,
                arguments=(port, i),
                backend=backend,
            )
            for i in range(2)
        }
        _wait(processes)
        if not any(bind_failure in _output(p) for p in processes.values() if p.returncode):
            return processes
    return processes


@pytest.mark.slow
@pytest.mark.jax_only  # in the JAX run, where TensorFlow is unimportable in the workers too
def test_jax_two_processes_only_process_0_logs(tmp_path):
    """keras.distribution.DataParallel on JAX over two CPU processes: process 0 logs what a
    single process logs; process 1 builds no step and writes nothing."""
    single_process = _start(
        "single", tmp_path / "single", tmp_path / "single.json", worker=JAX_WORKER, backend="jax"
    )
    # The first attempt's coordinator port is taken: the start-again path runs every time.
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        processes = _run_two_processes(tmp_path, "process", port=taken.getsockname()[1])
    assert JAX_BIND_FAILURE in (tmp_path / "attempt0" / "process0.json.out").read_text()
    _finish({**processes, "single": single_process})
    run = Path(processes["process0"].args[4]).parent
    first, second = (json.loads((run / f"process{i}.json").read_text()) for i in range(2))
    single = json.loads((tmp_path / "single.json").read_text())

    assert [first["process_index"], second["process_index"]] == [0, 1]
    assert first["process_count"] == second["process_count"] == 2  # one run of two processes
    assert first["active"] and first["built"] and not first["warnings"]
    assert not second["active"] and not second["built"]
    assert not any((run / "process1").rglob("*"))  # not one file, wherever
    np.testing.assert_allclose(first["loss"], single["loss"], rtol=RELATIVE)
    np.testing.assert_allclose(second["loss"], single["loss"], rtol=RELATIVE)

    _assert_logged(run / "process0")
    _assert_same_pictures(run / "process0", tmp_path / "single")


@pytest.mark.slow
@pytest.mark.jax_only
def test_jax_weights_sharded_across_processes_turn_logging_off(tmp_path):
    """Under ModelParallel with a kernel split across the two processes, process 0 has no
    whole copy of the weights: it says so once, logging is off, and training goes on."""
    processes = _run_two_processes(tmp_path, "sharded")
    _finish(processes)
    run = Path(processes["process0"].args[4]).parent
    first, second = (json.loads((run / f"process{i}.json").read_text()) for i in range(2))

    assert not first["active"] and not first["built"]
    (warning,) = first["warnings"]
    assert "sharded across processes (small_cnn/conv_a/kernel)" in warning
    assert "Nothing is logged in this fit()" in warning
    assert not second["active"] and not second["built"] and not second["warnings"]
    assert not any(run.rglob("events.out.tfevents.*"))
    assert len(first["loss"]) == 2 and np.isfinite(first["loss"]).all()


@pytest.mark.slow
@pytest.mark.torch_only
def test_torch_only_rank_0_logs(tmp_path):
    """Two ranks of a torch.distributed (gloo) group: rank 0 logs, rank 1 builds no step and writes nothing."""
    with socket.socket() as taken:  # the first attempt's port is taken: the start-again path runs
        taken.bind(("", 0))
        taken.listen()
        ranks = _run_two_processes(
            tmp_path,
            "rank",
            port=taken.getsockname()[1],
            worker=TORCH_WORKER,
            backend="torch",
            bind_failure=TORCH_BIND_FAILURE,
        )
    assert TORCH_BIND_FAILURE in (tmp_path / "attempt0" / "process0.json.out").read_text()
    run = Path(ranks["process0"].args[4]).parent
    _finish(ranks)
    first, second = (json.loads((run / f"process{i}.json").read_text()) for i in range(2))
    assert first == {"rank": 0, "active": True, "built": True}
    assert second == {"rank": 1, "active": False, "built": False}
    assert not any((run / "process1").rglob("*"))  # not one file, wherever
    result = read_activations(run / "process0")
    assert not result.problems
    assert [s.step for s in result.images[tags.tag(tags.IMAGE, "conv")]] == [0, 1]
