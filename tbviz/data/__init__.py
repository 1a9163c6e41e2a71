"""MNIST for the example and the demo, offline by default.

tbviz ships the MNIST *test* split (10,000 digits, 1.6 MB) as package data in
``tbviz/data/mnist`` (see the README there for its attribution and licence), so
the demo runs on a machine with no internet. Keras' full MNIST is used when it
is already cached or when the caller asks for it.
"""

from __future__ import annotations

import gzip
import os
from importlib import resources

import numpy as np

_IMAGES = "t10k-images-idx3-ubyte.gz"
_LABELS = "t10k-labels-idx1-ubyte.gz"


def _read_idx(name: str, offset: int) -> np.ndarray:
    with resources.files("tbviz").joinpath("data").joinpath("mnist").joinpath(name).open("rb") as f:
        return np.frombuffer(gzip.decompress(f.read()), dtype=np.uint8, offset=offset)


def load_shipped_mnist() -> tuple[np.ndarray, np.ndarray]:
    """Returns the shipped MNIST test split as ``(images, labels)``.

    ``images`` is uint8 of shape ``(10000, 28, 28)``, ``labels`` uint8 ``(10000,)``.
    """
    images = _read_idx(_IMAGES, 16).reshape(-1, 28, 28)
    labels = _read_idx(_LABELS, 8)
    return images, labels


def keras_mnist_cached() -> bool:
    """Whether Keras' full MNIST is already downloaded (in ``$KERAS_HOME/datasets``)."""
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.path.exists(os.path.join(keras_home, "datasets", "mnist.npz"))


def load_mnist(
    source: str = "auto",
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], str]:
    """Loads MNIST as ``((x_train, y_train), (x_test, y_test), source_used)``.

    Images are float32 in [0, 1] with shape ``(n, 28, 28, 1)``; labels uint8.

    Args:
        source: ``"shipped"`` uses the test split shipped with tbviz, split into
            8,000 training and 2,000 held-out digits; ``"keras"`` uses
            ``keras.datasets.mnist`` (downloads unless cached); ``"auto"`` uses
            Keras' copy when it is cached and the shipped one otherwise, so it
            never touches the network. Defaults to ``"auto"``.
    """
    if source not in ("auto", "shipped", "keras"):
        raise ValueError(
            f"`source` must be 'auto', 'shipped' or 'keras'. Received: source={source!r}"
        )
    if source == "keras" or (source == "auto" and keras_mnist_cached()):
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
        used = "keras"
    else:
        images, labels = load_shipped_mnist()
        x_train, y_train = images[:8000], labels[:8000]
        x_test, y_test = images[8000:], labels[8000:]
        used = "shipped"

    def prepare(x: np.ndarray) -> np.ndarray:
        return (x.astype(np.float32) / 255.0)[..., np.newaxis]

    return (prepare(x_train), y_train), (prepare(x_test), y_test), used
