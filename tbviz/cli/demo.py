"""The article's MNIST CNN, trained with `ActivationLogger`: the demo and the example.

Model and training as in the article: two 2x2 convolutions of 32 filters with
ReLU, each followed by 2x2 max-pooling, a 500-unit sigmoid layer, a 10-way
softmax, adam, sparse categorical cross-entropy, batches of 1,000.

It runs on whichever backend ``KERAS_BACKEND`` names. Losses go where Keras'
``TensorBoard`` callback puts them (``epoch_loss``, ``epoch_accuracy`` in the
``train`` and ``validation`` runs): written by that callback on TensorFlow,
and by `EpochScalars` on JAX and PyTorch, since Keras' callback needs
TensorFlow installed whatever the backend.
"""

from __future__ import annotations

import os

import keras
import numpy as np

from tbviz.callback import ActivationLogger
from tbviz.data import load_mnist
from tbviz.io.summaries import scalar_summary
from tbviz.io.writer import EventFileWriter

PROBE_COUNT = 4


def article_model() -> keras.Sequential:
    """The article's CNN, uncompiled (no ``Input``: built on its first batch)."""
    return keras.Sequential(
        [
            keras.layers.Conv2D(32, (2, 2), activation="relu", name="conv1"),
            keras.layers.MaxPooling2D((2, 2), name="pool1"),
            keras.layers.Conv2D(32, (2, 2), activation="relu", name="conv2"),
            keras.layers.MaxPooling2D((2, 2), name="pool2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(500, activation="sigmoid", name="dense"),
            keras.layers.Dense(10, activation="softmax", name="softmax"),
        ],
        name="article_cnn",
    )


class EpochScalars(keras.callbacks.Callback):
    """The epoch scalars of Keras' ``TensorBoard`` callback, written without TensorFlow.

    At the end of each epoch, every number in ``logs`` is written at step
    ``epoch`` as ``epoch_<name>``: ``val_<name>`` into ``<log_dir>/validation``,
    the rest into ``<log_dir>/train``, as ``keras.callbacks.TensorBoard`` writes
    them. Each epoch is flushed, so a running TensorBoard shows it at once.

    Args:
        log_dir: the directory of the ``train`` and ``validation`` runs.
    """

    def __init__(self, log_dir: str | os.PathLike) -> None:
        super().__init__()
        self.log_dir = os.fspath(log_dir)
        self._writers: dict[str, EventFileWriter] = {}

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for name, value in (logs or {}).items():
            run, metric = ("validation", name[4:]) if name.startswith("val_") else ("train", name)
            if run not in self._writers:
                self._writers[run] = EventFileWriter(os.path.join(self.log_dir, run))
            self._writers[run].write_summary(epoch, scalar_summary(f"epoch_{metric}", value))
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


def loss_logger(log_dir: str | os.PathLike) -> keras.callbacks.Callback:
    """Keras' ``TensorBoard`` callback on the TensorFlow backend, `EpochScalars` on the others."""
    if keras.config.backend() == "tensorflow":
        return keras.callbacks.TensorBoard(log_dir=os.fspath(log_dir))
    return EpochScalars(log_dir)


def probe_digits(x: np.ndarray, y: np.ndarray, count: int = PROBE_COUNT) -> np.ndarray:
    """The first sample of each of the digits 0, 1, 2, ... (count of them): a fixed probe."""
    return np.stack([x[np.flatnonzero(y == digit)[0]] for digit in range(count)])


def train(
    log_dir: str | os.PathLike = "logs/mnist",
    *,
    epochs: int = 20,
    source: str = "auto",
    verbose: int | str = "auto",
    learning_rate: float = 0.001,
    **logger_options,
) -> keras.callbacks.History:
    """Trains the article's CNN on MNIST, logging losses and feature maps to `log_dir`.

    Args:
        log_dir: where the losses (see `loss_logger`) and the feature maps are written.
            Defaults to `"logs/mnist"`.
        epochs: training epochs (the article trains 20). Defaults to `20`.
        source: which MNIST, see `tbviz.data.load_mnist`. Defaults to `"auto"`.
        verbose: passed to ``fit``. Defaults to `"auto"`.
        learning_rate: Adam's learning rate. Defaults to `0.001`.
        **logger_options: passed to `ActivationLogger`.
    """
    (x_train, y_train), (x_test, y_test), _ = load_mnist(source)
    keras.utils.set_random_seed(0)
    model = article_model()
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    log_dir = os.fspath(log_dir)
    return model.fit(
        x_train,
        y_train,
        epochs=epochs,
        batch_size=1000,
        validation_data=(x_test, y_test),
        verbose=verbose,
        callbacks=[
            loss_logger(log_dir),
            ActivationLogger(probe_digits(x_test, y_test), log_dir=log_dir, **logger_options),
        ],
    )
