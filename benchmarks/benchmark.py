"""What ActivationLogger costs per logged epoch, beside its own baseline.

    python benchmarks/benchmark.py                 # all cases (~20 min), prints a Markdown table
    python benchmarks/benchmark.py --cases mnist   # one case

For each case, in one run:

- *bare forward*: one ``tf.function`` forward pass of the probe batch (median of 7);
- *extra / logged epoch*: how much longer a logged epoch makes ``fit()``,
  measured inside one ``fit()`` where the logger logs every 4th epoch, logged
  and unlogged epochs interleaved (see `time_case`); the interquartile range
  over rounds is printed beside it. Work on tbviz's writer thread counts
  wherever it competes with training. The one-time build and tracing (the
  first logged epoch) is its own column;
- *ratio*: extra / bare forward; *% of epoch*: extra / an unlogged training epoch;
- *logging step alone*: the same work timed directly, out of ``fit()``: the
  traced step (its own forward pass, pictures, statistics) and the encoding
  and writing (median of 5), with its ratio to the bare forward pass;
- *bytes / epoch*: event-file bytes of the ``activations`` run per logged epoch;
- *memory*: peak growth of one logging step (forward pass + pictures +
  statistics + writing) and of one bare forward pass, each measured in a fresh
  process after a warm-up (median of 5), two ways: as RSS, Linux's resident
  high-water mark (reset through ``/proc/self/clear_refs``), with glibc's
  malloc returning large blocks to the system at once
  (``MALLOC_MMAP_THRESHOLD_``) and oneDNN's pooling allocator off
  (``TF_ENABLE_ONEDNN_OPTS=0``) so that RSS follows live memory; and as tensor
  memory, the peak of what TensorFlow's CPU allocator hands out
  (``TF_CPU_ALLOCATOR_USE_BFC=true`` makes it keep statistics), which leaves
  out fixed costs (the PNG compressor's state, runtime bookkeeping) that
  dominate RSS when the forward pass is small.

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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tbviz import ActivationLogger  # noqa: E402

CASES = ("mnist", "resnet50", "resnet50_all", "mobilenetv2")
PERIOD = 4  # the logger logs every 4th epoch of the timed fit()
# Timed rounds per case: more where epochs are short and the cost is small beside their noise.
ROUNDS = {"mnist": 30, "resnet50": 12, "resnet50_all": 12, "mobilenetv2": 8}


def make_case(name: str):
    """Returns (model, x_train, y_train, batch_size, probe, logger_kwargs, description)."""
    keras.utils.set_random_seed(0)
    if name == "mnist":
        from tbviz.datasets import load_shipped_mnist
        from tbviz.demo import article_model, probe_digits

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


def bare_forward_seconds(model, probe) -> float:
    forward = tf.function(lambda x: model(x, training=False))
    forward(probe)
    times = []
    for _ in range(7):
        start = time.perf_counter()
        np.asarray(forward(probe))  # one pass; the result is copied out as fit() would
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
    # A repeated tf.data pipeline: fed NumPy arrays, Keras shuffles and slices them anew
    # each epoch, partly in the background, which makes epoch times bimodal (0.9 s or
    # 1.25 s for the MNIST case, at random) and would drown what is measured here.
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).repeat()
    steps = len(x) // batch_size

    def fit(epochs, callbacks=()):
        model.fit(data, steps_per_epoch=steps, epochs=epochs, verbose=0, callbacks=list(callbacks))

    with tempfile.TemporaryDirectory() as log_dir:
        logger = ActivationLogger(probe, log_dir=log_dir, freq=PERIOD, **kwargs)
        fit(2)  # traces the train step
        warm_up = EpochClock()
        fit(2, [logger, warm_up])  # builds and traces the logger in epoch 0; epoch 1 is plain
        layers = len(logger._selected)
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
            logger._write(epoch, layers_out)
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


def _tensor_peak_growth(action) -> int:
    """Peak growth, in bytes, of the memory TensorFlow's CPU allocator hands out to tensors
    while `action` runs (needs ``TF_CPU_ALLOCATOR_USE_BFC=true`` for the allocator's stats)."""
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    action()
    return tf.config.experimental.get_memory_info("CPU:0")["peak"] - before


def measure_memory(name: str, mode: str, kind: str, repeats: int = 5) -> float:
    """Median peak growth of `repeats` bare forward passes or logging steps, after a warm-up."""
    growth = _peak_growth if kind == "rss" else _tensor_peak_growth
    model, _, _, _, probe, kwargs, _ = make_case(name)
    if mode == "forward":
        forward = tf.function(lambda x: model(x, training=False))
        forward(probe)
        return statistics.median(growth(lambda: np.asarray(forward(probe))) for _ in range(repeats))
    with tempfile.TemporaryDirectory() as log_dir:
        logger = ActivationLogger(probe, log_dir=log_dir, **kwargs)
        logger.set_model(model)
        logger.on_train_begin()

        def log_epoch(epoch):
            logger.on_epoch_end(epoch)
            logger._wait_for_writes()

        log_epoch(0)
        return statistics.median(
            growth(lambda epoch=epoch: log_epoch(epoch)) for epoch in range(1, repeats + 1)
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
    result = {}
    for kind, env in _MEMORY_ENV.items():
        for mode in ("forward", "logging"):
            out = subprocess.run(
                [sys.executable, __file__, "--memory", name, mode, kind],
                env=dict(os.environ, **env), capture_output=True, text=True, check=True,
            )  # fmt: skip
            result[f"{kind}_{mode}_mb"] = json.loads(out.stdout.strip().splitlines()[-1]) / 2**20
        logging_mb, forward_mb = result[f"{kind}_logging_mb"], result[f"{kind}_forward_mb"]
        result[f"{kind}_ratio"] = logging_mb / max(forward_mb, 1e-9)
    return result


def _mb(value: float) -> str:
    return f"{value:.2f} MB" if value < 10 else f"{value:.0f} MB"


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
        f"| {_mb(r['rss_logging_mb'])} / {_mb(r['rss_forward_mb'])} = {r['rss_ratio']:.2f}x "
        f"| {_mb(r['tensors_logging_mb'])} / {_mb(r['tensors_forward_mb'])} "
        f"= {r['tensors_ratio']:.2f}x |"
        for r in rows
    ]
    return head + "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {CASES}")
    parser.add_argument(
        "--rounds",
        type=int,
        help=f"timed rounds of {PERIOD} epochs (one logged) per case; default: {ROUNDS}",
    )
    parser.add_argument(
        "--memory", nargs=3, metavar=("CASE", "MODE", "KIND"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.memory:
        print(json.dumps(measure_memory(*args.memory)))
        return
    rows = []
    for name in args.cases.split(","):
        row = time_case(name, rounds=args.rounds or ROUNDS[name])
        row.update(memory_case(name))
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    print(
        f"\ntbviz benchmark: TensorFlow {tf.__version__}, Keras {keras.__version__}, "
        f"{os.cpu_count()} CPU cores, {'GPU' if tf.config.list_physical_devices('GPU') else 'no GPU'}\n"
    )
    print(markdown(rows))


if __name__ == "__main__":
    main()
