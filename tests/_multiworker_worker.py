"""A fresh Python process for tests/test_distributed.py: trains a small CNN with ActivationLogger.

    python tests/_multiworker_worker.py MODE LOG_DIR RESULT_JSON

MODE:
    fit-single      ``model.fit``, no strategy: the reference for fit-mirrored.
    fit-mirrored    ``model.fit`` under MirroredStrategy over the CPU split into two
                    logical devices (set before TensorFlow initialises its devices:
                    hence a fresh process).
    loop-single     a custom training loop, no strategy: the reference for loop-worker.
    loop-worker     the same loop as one worker of a MultiWorkerMirroredStrategy;
                    TF_CONFIG, set by the caller, names the cluster and this worker.

Why a custom loop for MultiWorkerMirroredStrategy: with TensorFlow 2.21 and
Keras 3.15, ``model.fit`` under that strategy fails before the first batch,
whatever the callbacks, in Keras' ``TensorFlowTrainer._maybe_symbolic_build``:
``ValueError: Attempt to convert a value (PerReplica:{...}) with an unsupported
type (<class 'tensorflow.python.distribute.values.PerReplica'>) to a Tensor.``
(keras-team/keras#20585, tensorflow/tensorflow#72388, both open). The loop
drives the callback exactly as ``fit`` does (``CallbackList``: set_model,
on_train_begin, on_train_batch_end, on_epoch_end, on_train_end) and trains
with ``strategy.run`` and the model's own optimizer, which sums gradients over
all replicas.

Every mode trains the same model (same seed, same initial weights) on the same
data with the same global batch, unshuffled, for 2 epochs, and writes a JSON
file with what the tests check.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from _distributed_model import build_model, data  # noqa: E402

GLOBAL_BATCH = 8
EPOCHS = 2
PROBES = 3
LAYERS = ["conv_a", "pool_a", "conv_b", "gap"]


def _logger(log_dir: str):
    import tbviz

    x, _ = data()
    # Grey: each pixel reads back as its colour level (tests/test_distributed.py).
    return tbviz.ActivationLogger(x[:PROBES], log_dir=log_dir, layers=LAYERS, cmap="gray")


def _report(strategy, logger, losses: list[float]) -> dict:
    return {
        "replicas": strategy.num_replicas_in_sync,
        "active": bool(logger._active),
        "built": logger._built is not None,
        "loss": losses,
    }


def train_fit(strategy, log_dir: str) -> dict:
    """``model.fit`` with the logger."""
    x, y = data()
    with strategy.scope():
        model = build_model()
    logger = _logger(log_dir)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    history = model.fit(dataset, epochs=EPOCHS, verbose=0, callbacks=[logger])
    return _report(strategy, logger, [float(v) for v in history.history["loss"]])


def train_loop(strategy, log_dir: str) -> dict:
    """A custom loop with ``strategy.run``, driving the logger as ``fit`` drives callbacks."""
    import keras

    x, y = data()
    with strategy.scope():
        model = build_model()
        per_example = keras.losses.SparseCategoricalCrossentropy(reduction=None)
    logger = _logger(log_dir)
    callbacks = keras.callbacks.CallbackList([logger], model=model)

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        # Worker i takes the i-th slice of every global batch: each step sees the
        # same 8 samples as the single-process run.
        share = GLOBAL_BATCH // context.num_input_pipelines
        start = context.input_pipeline_id * share
        return (
            tf.data.Dataset.from_tensor_slices((x, y))
            .batch(GLOBAL_BATCH)
            .map(lambda a, b: (a[start : start + share], b[start : start + share]))
        )

    dataset = strategy.distribute_datasets_from_function(dataset_fn)

    @tf.function
    def train_step(batch):
        def replica_step(images, labels):
            with tf.GradientTape() as tape:
                loss = (
                    tf.reduce_sum(per_example(labels, model(images, training=True))) / GLOBAL_BATCH
                )
            gradients = tape.gradient(loss, model.trainable_variables)
            model.optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
            return loss

        return strategy.reduce("SUM", strategy.run(replica_step, args=batch), axis=None)

    losses = []
    callbacks.on_train_begin()
    for epoch in range(EPOCHS):
        callbacks.on_epoch_begin(epoch)
        total, steps = 0.0, 0
        for step, batch in enumerate(dataset):
            callbacks.on_train_batch_begin(step)
            loss = float(train_step(batch))
            callbacks.on_train_batch_end(step, {"loss": loss})
            total, steps = total + loss, steps + 1
        losses.append(total / steps)
        callbacks.on_epoch_end(epoch, {"loss": losses[-1]})
    callbacks.on_train_end()
    return _report(strategy, logger, losses)


def main() -> None:
    mode, log_dir, result_path = sys.argv[1:4]
    if mode == "fit-mirrored":
        (cpu,) = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        result = train_fit(tf.distribute.MirroredStrategy(devices), log_dir)
        result["devices"] = devices
    elif mode == "fit-single":
        result = train_fit(tf.distribute.get_strategy(), log_dir)
    elif mode == "loop-worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        result = train_loop(strategy, log_dir)
        result["task"] = json.loads(os.environ["TF_CONFIG"])["task"]
        result["should_save_summary"] = bool(strategy.extended.should_save_summary)
    elif mode == "loop-single":
        result = train_loop(tf.distribute.get_strategy(), log_dir)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    with open(result_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
