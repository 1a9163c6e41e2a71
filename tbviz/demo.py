"""The article's MNIST CNN, trained with `ActivationLogger`: the demo and the example.

Model and training as in the article: two 2x2 convolutions of 32 filters with
ReLU, each followed by 2x2 max-pooling, a 500-unit sigmoid layer, a 10-way
softmax, adam, sparse categorical cross-entropy, batches of 1,000.
"""

from __future__ import annotations

import os

import keras
import numpy as np

from tbviz.activation_logger import ActivationLogger
from tbviz.datasets import load_mnist

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


def probe_digits(x: np.ndarray, y: np.ndarray, count: int = PROBE_COUNT) -> np.ndarray:
    """The first sample of each of the digits 0, 1, 2, ... (count of them): a fixed probe."""
    return np.stack([x[np.flatnonzero(y == digit)[0]] for digit in range(count)])


def train(
    log_dir: str | os.PathLike = "logs/mnist",
    *,
    epochs: int = 20,
    source: str = "auto",
    verbose: int | str = "auto",
    **logger_options,
) -> keras.callbacks.History:
    """Trains the article's CNN on MNIST, logging losses and feature maps to `log_dir`.

    Args:
        log_dir: where Keras' ``TensorBoard`` callback and tbviz write.
            Defaults to `"logs/mnist"`.
        epochs: training epochs (the article trains 20). Defaults to `20`.
        source: which MNIST, see `tbviz.datasets.load_mnist`. Defaults to `"auto"`.
        verbose: passed to ``fit``. Defaults to `"auto"`.
        **logger_options: passed to `ActivationLogger`.
    """
    (x_train, y_train), (x_test, y_test), _ = load_mnist(source)
    keras.utils.set_random_seed(0)
    model = article_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    log_dir = os.fspath(log_dir)
    return model.fit(
        x_train,
        y_train,
        epochs=epochs,
        batch_size=1000,
        validation_data=(x_test, y_test),
        verbose=verbose,
        callbacks=[
            keras.callbacks.TensorBoard(log_dir=log_dir),
            ActivationLogger(probe_digits(x_test, y_test), log_dir=log_dir, **logger_options),
        ],
    )
