"""What ActivationLogger costs per logged epoch, against its goals (issue 21), and in full.

    python benchmarks/benchmark.py                  # TensorFlow's goal rows, each over 2 runs (~15 min)
    python benchmarks/benchmark.py --backend jax    # or torch: that backend's goal rows
    python benchmarks/benchmark.py --runs 3         # more runs (fresh processes) per row
    python benchmarks/benchmark.py --table          # the full cost table: every case, memory too (~20 min)
    python benchmarks/benchmark.py --table --cases mnist --rounds 4

``--backend`` (default: ``KERAS_BACKEND``, else tensorflow) is set as
``KERAS_BACKEND`` before Keras is imported. The goal rows (`GOALS`) print each
figure's range over ``--runs`` runs, each in a fresh process, beside its goal,
with the load average of the machine before and after (on a shared machine
the figures are worth what the load lets them be). What each measures, for
one case, in one run:

- *bare forward*: one forward pass of the probe batch (median of 7), already on
  the device, its output copied to the host, compiled as each backend compiles
  naturally: TensorFlow a ``tf.function``; JAX one ``jax.jit`` of
  ``model.stateless_call`` with the weights passed as arguments; PyTorch an
  eager call under ``torch.no_grad()`` (Keras' own ``predict`` on PyTorch);
- *logged epoch ÷ bare forward* (the table's *overhead ratio*): how much
  longer a logged epoch makes ``fit()`` (*extra / logged epoch*), measured
  inside one ``fit()`` where the logger logs every 4th epoch, logged and
  unlogged epochs interleaved (see `time_case`), divided by a bare forward
  pass; the interquartile range over rounds is printed beside it. Work on
  tbviz's writer thread counts wherever it competes with training. *% of
  epoch*: extra / an unlogged training epoch;
- *first logged epoch* (the table's *one-time build*): the first logged
  epoch's extra time: building, tracing and compiling the step;
- *logging step ÷ bare forward* (the table's *logging step alone*): the same
  work timed directly, out of ``fit()``: the step (its own forward pass,
  pictures, statistics) and the encoding and writing (median of 5), divided by
  a bare forward pass; the goal rows divide the step alone;
- *MB per epoch*: event-file bytes of the ``activations`` run per logged
  epoch, on uniform-noise probes (which compress worst);
- *health*: the logging step (step and writing) with ``health=True`` divided
  by the same with ``health=False``, two loggers on one model, their steps
  interleaved (median of 9 each; `time_health`);
- *memory*: peak growth of one logging step (forward pass + pictures +
  statistics + writing) and of one bare forward pass, each measured in a fresh
  process after a warm-up (median of 5), two ways: as RSS, Linux's resident
  high-water mark (reset through ``/proc/self/clear_refs``), with glibc's
  malloc returning large blocks to the system at once
  (``MALLOC_MMAP_THRESHOLD_``) and oneDNN's pooling allocator off
  (``TF_ENABLE_ONEDNN_OPTS=0``) so that RSS follows live memory; and as tensor
  memory, the peak of what the backend's allocator hands out, which leaves
  out fixed costs (the PNG compressor's state, runtime bookkeeping) that
  dominate RSS when the forward pass is small: TensorFlow's allocator on the
  device (on CPU ``TF_CPU_ALLOCATOR_USE_BFC=true`` makes it keep statistics),
  JAX's device memory statistics and PyTorch's CUDA allocator on a GPU (on
  CPU neither keeps any: "n/a").

No weights are downloaded (``weights=None``); no data set either (MNIST is the
shipped test split).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

BACKENDS = ("tensorflow", "jax", "torch")


def _backend_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=os.environ.get("KERAS_BACKEND", "tensorflow"),
        help="Keras backend (default: KERAS_BACKEND, else %(choices)s' first)",
    )


# Keras takes its backend from KERAS_BACKEND when it is first imported: set it first.
_early = argparse.ArgumentParser(add_help=False)
_backend_option(_early)
os.environ["KERAS_BACKEND"] = _early.parse_known_args()[0].backend
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tbviz import ActivationLogger  # noqa: E402

BACKEND = keras.config.backend()
if BACKEND == "tensorflow":
    import tensorflow as tf

CASES = ("mnist", "resnet50", "resnet50_all", "mobilenetv2")
PERIOD = 4  # the logger logs every 4th epoch of the timed fit()
# Timed rounds per case: more where epochs are short and the cost is small beside their noise.
ROUNDS = {"mnist": 30, "resnet50": 12, "resnet50_all": 12, "mobilenetv2": 8}


def make_case(name: str):
    """Returns (model, x_train, y_train, batch_size, probe, logger_kwargs, description)."""
    keras.utils.set_random_seed(0)
    if name == "mnist":
        from tbviz.cli.demo import article_model, probe_digits
        from tbviz.data import load_shipped_mnist

        images, labels = load_shipped_mnist()
        x = (images.astype(np.float32) / 255.0)[..., None]
        model = article_model()
        model.build((None, 28, 28, 1))
        probe = probe_digits(x, labels)
        return model, x, labels, 1000, probe, {}, "article CNN, 4 probes, default layers, epoch = 10,000 images"
    rng = np.random.default_rng(0)
    if name in ("resnet50", "resnet50_all"):
        model = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3), classes=10)
        if name == "resnet50":
            kwargs, what = {}, "224x224, 8 probes, default layers"
        else:
            kwargs, what = {"layers": "all"}, '224x224, 8 probes, layers="all"'
    elif name == "mobilenetv2":
        model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), classes=10)
        kwargs = {"layers": lambda_all_image_layers(model)}
        what = "224x224, 8 probes, every image-like layer"
    else:
        raise ValueError(f"unknown case {name!r}; expected one of {CASES}")
    # Epochs of 4 batches: with 1-batch epochs, Keras' own per-epoch work (iterator set-up
    # and tear-down, which runs partly in the background) makes epoch times bimodal.
    x = rng.random((32, 224, 224, 3), dtype=np.float32)
    y = rng.integers(0, 10, 32)
    return model, x, y, 8, x[:8].copy(), kwargs, f"{what}, epoch = 4 batches of 8"


def lambda_all_image_layers(model) -> list[str]:
    """Names of every layer with a rank-4 output (InputLayer excluded)."""
    return [
        layer.name
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer) and len(layer.output.shape) == 4
    ]


def bare_forward(model, probe):
    """One forward pass of `probe` (moved to the device once), compiled the backend's way and
    warmed up; calling it runs the pass and copies the output to the host, as fit() would."""
    x = keras.ops.convert_to_tensor(probe)
    if BACKEND == "tensorflow":
        forward = tf.function(lambda x: model(x, training=False))

        def run():
            return np.asarray(forward(x))

    elif BACKEND == "jax":
        import jax

        @jax.jit
        def forward(trainable, non_trainable, x):
            outputs, _ = model.stateless_call(trainable, non_trainable, x, training=False)
            return outputs

        def run():  # the weights' current values, passed in: never baked in as constants
            trainable = [v.value for v in model.trainable_variables]
            non_trainable = [v.value for v in model.non_trainable_variables]
            return np.asarray(forward(trainable, non_trainable, x))

    else:
        import torch

        def run():
            with torch.no_grad():
                return keras.ops.convert_to_numpy(model(x, training=False))

    run()
    return run


def bare_forward_seconds(model, probe) -> float:
    run = bare_forward(model, probe)
    times = []
    for _ in range(7):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class _Batches(keras.utils.PyDataset):
    """The same batches every epoch, in order, from the training thread (no workers)."""

    def __init__(self, x, y, batch_size: int) -> None:
        super().__init__()
        self.batches = [
            (x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)
        ]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int):
        return self.batches[index]


def training_data(x, y, batch_size: int):
    """Training batches that take the same time every epoch (see `time_case`)."""
    if BACKEND == "tensorflow":  # as measured before the other backends: a tf.data pipeline
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).repeat()
    return _Batches(x, y, batch_size)


def event_bytes(run_dir: str) -> int:
    return sum(
        os.path.getsize(os.path.join(run_dir, f)) for f in os.listdir(run_dir) if "tfevents" in f
    )


class EpochClock(keras.callbacks.Callback):
    """Wall-clock time of every epoch: from its start to the next one's start (the last
    one: to its end), so each epoch's own end-of-epoch work (the logger's) counts in it."""

    def __init__(self) -> None:
        super().__init__()
        self.starts: list[float] = []
        self.end = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.starts.append(time.perf_counter())

    def on_epoch_end(self, epoch, logs=None):
        self.end = time.perf_counter()

    def durations(self) -> np.ndarray:
        return np.diff([*self.starts, self.end])


def time_case(name: str, rounds: int) -> dict:
    """Times one case: the logger's extra wall time per logged epoch, inside ``fit()``.

    One ``fit()`` runs ``PERIOD * (rounds + 1)`` epochs with the logger logging every
    ``PERIOD``-th (``freq=PERIOD``). Each round is a logged epoch, the unlogged epoch
    after it (where the writer thread finishes the logged epoch, competing with
    training), then two unlogged epochs as the baseline; the last epoch of a round is
    unlogged, so nothing is left for the final wait in ``on_train_end``. The extra per
    logged epoch is the median over rounds of (logged + next) - (the two baseline
    epochs): logged and baseline epochs interleave in the same run, so slow drifts and
    bursts of a shared machine cancel out instead of landing on one side. The first
    round (the first epoch of ``fit()`` sets up Keras' data iterator) is left out.
    """
    model, x, y, batch_size, probe, kwargs, what = make_case(name)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    forward = bare_forward_seconds(model, probe)
    # Fixed batches: fed NumPy arrays, Keras shuffles and slices them anew each epoch,
    # partly in the background, which makes epoch times bimodal (0.9 s or 1.25 s for the
    # MNIST case on TensorFlow, at random) and would drown what is measured here.
    data = training_data(x, y, batch_size)
    steps = len(x) // batch_size

    def fit(epochs, callbacks=()):
        model.fit(data, steps_per_epoch=steps, epochs=epochs, verbose=0, callbacks=list(callbacks),
                  shuffle=False)  # fmt: skip

    with tempfile.TemporaryDirectory() as log_dir:
        logger = ActivationLogger(probe, log_dir=log_dir, freq=PERIOD, **kwargs)
        fit(2)  # traces the train step
        warm_up = EpochClock()
        fit(2, [logger, warm_up])  # builds and traces the logger in epoch 0; epoch 1 is plain
        layers = len(logger._built.layers)
        run_dir = logger._writer.run_dir
        bytes_before = event_bytes(run_dir)
        clock = EpochClock()  # last, so that each epoch's clock stops after the logger's work
        fit(PERIOD * (rounds + 1), [logger, clock])
        per_epoch = (event_bytes(run_dir) - bytes_before) / (rounds + 1)
        # The logging step alone, out of fit(): the traced step on the training thread,
        # then the PNG encoding and writing that the writer thread does.
        step_times, write_times = [], []
        for epoch in range(1000, 1005):
            start = time.perf_counter()
            layers_out = logger._log(epoch)
            middle = time.perf_counter()
            logger._writer.write_epoch(epoch, layers_out)
            step_times.append(middle - start)
            write_times.append(time.perf_counter() - middle)
    d = clock.durations().reshape(rounds + 1, PERIOD)[1:]
    extras = d[:, 0] + d[:, 1] - d[:, 2] - d[:, 3]
    epoch = float(np.median(d[:, 2:]))
    extra = float(np.median(extras))
    return {
        "case": name,
        "what": what,
        "layers": layers,
        "cards": layers * len(probe),
        "forward_s": forward,
        "epoch_s": epoch,
        "extra_s": extra,
        "extra_iqr_s": [float(v) for v in np.percentile(extras, [25, 75])],
        "rounds": rounds,
        "ratio": extra / forward,
        "percent_of_epoch": 100 * extra / epoch,
        "build_s": float(warm_up.durations()[0] - warm_up.durations()[1]),
        "step_s": statistics.median(step_times),
        "write_s": statistics.median(write_times),
        "bytes_per_epoch": per_epoch,
    }


def time_health(name: str, repeats: int = 9) -> dict:
    """The logging step (step and writing) with health judged, divided by the same without:
    two loggers on one model, built and warmed up, their steps interleaved."""
    model, _, _, _, probe, kwargs, _ = make_case(name)
    with tempfile.TemporaryDirectory() as log_dir:
        loggers = {}
        for health in (True, False):
            logger = ActivationLogger(
                probe, log_dir=os.path.join(log_dir, str(health)), health=health, **kwargs
            )
            logger.set_model(model)
            logger.on_train_begin()
            logger._writer.write_epoch(0, logger._log(0))
            loggers[health] = logger
        times: dict[bool, list[float]] = {True: [], False: []}
        for epoch in range(1, repeats + 1):
            for health, logger in loggers.items():
                start = time.perf_counter()
                logger._writer.write_epoch(epoch, logger._log(epoch))
                times[health].append(time.perf_counter() - start)
        for logger in loggers.values():
            logger.on_train_end()
    with_health, without = (statistics.median(times[h]) for h in (True, False))
    return {"health_s": with_health, "no_health_s": without, "health_ratio": with_health / without}


# -- memory, in a fresh process per measurement --------------------------------------------


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(field + ":")).split()[1])


def _peak_growth(action) -> int:
    """Peak RSS growth, in bytes, while `action` runs: Linux's high-water mark (VmHWM),
    reset just before the action through /proc/self/clear_refs."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    baseline = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    action()
    return (_status_kb("VmHWM") - baseline) * 1024


def _tensor_peak_growth(action) -> int | None:
    """Peak growth, in bytes, of the memory the backend's allocator hands out to tensors
    while `action` runs; None where it keeps no statistics (JAX and PyTorch on CPU).

    TensorFlow: its allocator on the first GPU, else on the CPU (which needs
    ``TF_CPU_ALLOCATOR_USE_BFC=true`` for statistics). JAX: the first device's
    statistics, whose peak cannot be reset; `measure_memory` runs in a fresh process
    whose warm-up is the same work, so the peak is the action's. PyTorch: CUDA's.
    """
    if BACKEND == "tensorflow":
        device = "GPU:0" if tf.config.list_physical_devices("GPU") else "CPU:0"
        tf.config.experimental.reset_memory_stats(device)
        before = tf.config.experimental.get_memory_info(device)["current"]
        action()
        return tf.config.experimental.get_memory_info(device)["peak"] - before
    if BACKEND == "jax":
        import jax

        device = jax.local_devices()[0]
        if not device.memory_stats():
            return None
        before = device.memory_stats()["bytes_in_use"]
        action()
        return device.memory_stats()["peak_bytes_in_use"] - before
    import torch

    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    action()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def _median(values: list) -> float | None:
    return None if None in values else statistics.median(values)


def measure_memory(name: str, mode: str, kind: str, repeats: int = 5) -> float | None:
    """Median peak growth of `repeats` bare forward passes or logging steps, after a warm-up."""
    growth = _peak_growth if kind == "rss" else _tensor_peak_growth
    model, _, _, _, probe, kwargs, _ = make_case(name)
    if mode == "forward":
        run = bare_forward(model, probe)
        return _median([growth(run) for _ in range(repeats)])
    with tempfile.TemporaryDirectory() as log_dir:
        logger = ActivationLogger(probe, log_dir=log_dir, **kwargs)
        logger.set_model(model)
        logger.on_train_begin()

        def log_epoch(epoch):
            logger.on_epoch_end(epoch)
            logger._wait_for_writes()

        log_epoch(0)
        return _median(
            [growth(lambda epoch=epoch: log_epoch(epoch)) for epoch in range(1, repeats + 1)]
        )


# RSS follows live memory only if freed memory goes back to the system at once: glibc's
# malloc returns large blocks (MALLOC_MMAP_THRESHOLD_) and oneDNN's pooling allocator is off.
# Tensor memory is read from TensorFlow's allocator, in its BFC form, which keeps statistics.
_MEMORY_ENV = {
    "rss": {"MALLOC_MMAP_THRESHOLD_": "65536", "TF_ENABLE_ONEDNN_OPTS": "0"},
    "tensors": {"TF_CPU_ALLOCATOR_USE_BFC": "true", "TF_ENABLE_ONEDNN_OPTS": "0"},
}


def memory_case(name: str) -> dict:
    """Peak memory growth of a logging step and of a bare forward pass, each in a fresh process."""
    result: dict = {}
    for kind, env in _MEMORY_ENV.items():
        for mode in ("forward", "logging"):
            out = subprocess.run(
                [sys.executable, __file__, "--backend", BACKEND, "--memory", name, mode, kind],
                env=dict(os.environ, **env), capture_output=True, text=True, check=True,
            )  # fmt: skip
            grown = json.loads(out.stdout.strip().splitlines()[-1])
            result[f"{kind}_{mode}_mb"] = None if grown is None else grown / 2**20
        logging_mb, forward_mb = result[f"{kind}_logging_mb"], result[f"{kind}_forward_mb"]
        unmeasured = logging_mb is None or forward_mb is None
        result[f"{kind}_ratio"] = None if unmeasured else logging_mb / max(forward_mb, 1e-9)
    return result


def _mb(value: float) -> str:
    return f"{value:.2f} MB" if value < 10 else f"{value:.0f} MB"


def _memory(row: dict, kind: str) -> str:
    if row[f"{kind}_ratio"] is None:
        return "n/a"
    return (
        f"{_mb(row[f'{kind}_logging_mb'])} / {_mb(row[f'{kind}_forward_mb'])} "
        f"= {row[f'{kind}_ratio']:.2f}x"
    )


def markdown(rows: list[dict]) -> str:
    head = (
        "| case | layers (cards) | bare forward | training epoch | extra / logged epoch (IQR) "
        "| overhead ratio | % of epoch | logging step alone: traced step + writing (ratio) "
        "| one-time build | event bytes / epoch | peak RSS growth: logging / forward "
        "| peak tensor memory: logging / forward |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| **{r['case']}**: {r['what']} | {r['layers']} ({r['cards']}) | {r['forward_s']:.3f} s "
        f"| {r['epoch_s']:.2f} s | {r['extra_s']:.3f} s "
        f"({r['extra_iqr_s'][0]:.3f} to {r['extra_iqr_s'][1]:.3f}) "
        f"| {r['ratio']:.2f} | {r['percent_of_epoch']:.1f}% "
        f"| {r['step_s']:.3f} s + {r['write_s']:.3f} s "
        f"({(r['step_s'] + r['write_s']) / r['forward_s']:.2f}) "
        f"| {r['build_s']:.1f} s | {r['bytes_per_epoch'] / 1e6:.2f} MB "
        f"| {_memory(r, 'rss')} | {_memory(r, 'tensors')} |"
        for r in rows
    ]
    return head + "\n".join(lines)


def backend_description() -> str:
    """The backend, its version, Keras' version and the device, e.g. "JAX 0.10.2 on cpu"."""
    if BACKEND == "tensorflow":
        gpus = tf.config.list_physical_devices("GPU")
        name, device = f"TensorFlow {tf.__version__}", "GPU" if gpus else "CPU"
    elif BACKEND == "jax":
        import jax

        name, device = f"JAX {jax.__version__}", jax.local_devices()[0].device_kind
    else:
        import torch

        gpu = torch.cuda.is_available()
        name, device = f"PyTorch {torch.__version__}", torch.cuda.get_device_name() if gpu else "CPU"
    return f"{name} (Keras {keras.__version__}) on {device}"


# -- the goals: issue 21's table, and the layer-health issue's 10 % ----------------------


@dataclass(frozen=True)
class Goal:
    """One row: `metric` of a case's measurements (`time_case`, `time_health`), at most `goal`."""

    what: str
    case: str
    metric: str
    goal: float
    unit: str = ""

    def value(self, row: dict) -> float:
        if self.metric == "step_ratio":
            return row["step_s"] / row["forward_s"]
        if self.metric == "mb":
            return row["bytes_per_epoch"] / 1e6
        return row[self.metric]


GOALS = {
    "tensorflow": [
        Goal("MobileNetV2, every image-like layer: logged epoch ÷ bare forward", "mobilenetv2", "ratio", 2.0),
        Goal("MobileNetV2, every image-like layer: first logged epoch", "mobilenetv2", "build_s", 3.0, " s"),
        Goal("ResNet-50, every layer: logged epoch ÷ bare forward", "resnet50_all", "ratio", 1.6),
        Goal("ResNet-50, every layer: MB per epoch (uniform-noise probes)", "resnet50_all", "mb", 5.0, " MB"),
        Goal("ResNet-50, every layer: first logged epoch", "resnet50_all", "build_s", 3.0, " s"),
        Goal("MobileNetV2, every image-like layer: logging step with health ÷ without", "mobilenetv2", "health_ratio", 1.10),
    ],
    "jax": [
        Goal("ResNet-50, every layer: one-time build (first logged epoch)", "resnet50_all", "build_s", 8.0, " s"),
        Goal("ResNet-50, default layers: logging step ÷ bare forward", "resnet50", "step_ratio", 1.5),
        Goal("ResNet-50, default layers: logging step with health ÷ without", "resnet50", "health_ratio", 1.10),
    ],
    "torch": [
        Goal("ResNet-50, every layer: logging step ÷ bare forward", "resnet50_all", "step_ratio", 2.0),
        Goal("ResNet-50, every layer: logging step with health ÷ without", "resnet50_all", "health_ratio", 1.10),
    ],
}  # fmt: skip


def measure_case(name: str, rounds: int, health: bool) -> dict:
    """One run of a case for the goal rows: `time_case`, and `time_health` if asked."""
    row = time_case(name, rounds)
    if health:
        row.update(time_health(name))
    return row


def _child(*arguments: str) -> dict:
    """Runs this script in a fresh process (its own imports, caches and first epochs)."""
    out = subprocess.run(
        [sys.executable, __file__, "--backend", BACKEND, *arguments],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def _figure(value: float, unit: str) -> str:
    return f"{value:.2f}{unit}" if value < 10 else f"{value:.1f}{unit}"


def goal_table(runs: int, rounds: int | None) -> str:
    """The goal rows of this backend, each figure's range over `runs` fresh processes."""
    goals = GOALS[BACKEND]
    cases = list(dict.fromkeys(g.case for g in goals))
    measured: dict[str, list[dict]] = {case: [] for case in cases}
    for _ in range(runs):  # run after run, so that a burst of load spoils one run, not a case
        for case in cases:
            health = any(g.case == case and g.metric == "health_ratio" for g in goals)
            arguments = ["--measure", case, "--rounds", str(rounds or ROUNDS[case])]
            row = _child(*arguments, *(["--health"] if health else []))
            measured[case].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    lines = [
        f"| goal (issue 21; health: its own issue) | {runs} run{'s' if runs > 1 else ''} | goal | met |",
        "|---|---|---|---|",
    ]
    for g in goals:
        values = [g.value(row) for row in measured[g.case]]
        low, high = min(values), max(values)
        span = _figure(low, g.unit) if runs == 1 else f"{_figure(low, '')} to {_figure(high, g.unit)}"
        met = "yes" if high <= g.goal else ("no" if low > g.goal else "in part")
        if low < 0:  # logged epochs timed shorter than unlogged ones: the method failed
            met = "not measured (negative)"
        lines.append(f"| {g.what} | {span} | ≤ {_figure(g.goal, g.unit)} | {met} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _backend_option(parser)
    parser.add_argument("--runs", type=int, default=2, help="runs of each goal row (default: %(default)s)")
    parser.add_argument("--table", action="store_true", help="the full cost table instead")
    parser.add_argument("--cases", default=",".join(CASES), help=f"with --table: comma-separated, from {CASES}")
    parser.add_argument(
        "--rounds",
        type=int,
        help=f"timed rounds of {PERIOD} epochs (one logged) per case; default: {ROUNDS}",
    )
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--health", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--memory", nargs=3, metavar=("CASE", "MODE", "KIND"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.memory:
        print(json.dumps(measure_memory(*args.memory)))
        return
    if args.measure:
        print(json.dumps(measure_case(args.measure, args.rounds or ROUNDS[args.measure], args.health)))
        return
    before = os.getloadavg()[0]
    if args.table:
        rows = []
        for name in args.cases.split(","):
            row = time_case(name, rounds=args.rounds or ROUNDS[name])
            row.update(memory_case(name))
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        table = markdown(rows)
    else:
        table = goal_table(args.runs, args.rounds)
    print(
        f"\ntbviz benchmark: {backend_description()}, {os.cpu_count()} CPU cores; "
        f"load average {before:.1f} before, {os.getloadavg()[0]:.1f} after\n"
    )
    print(table)


if __name__ == "__main__":
    main()
