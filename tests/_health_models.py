"""Small models for the layer-health tests and benchmarks/health.py: healthy ones, and the
article's CNN with one fault injected per finding kind.

Each ``make(x, y, x_test, fault, at=1)`` returns ``(model, (x, y, probes), callbacks)``:
the model compiled, its training data and the probe source in its input's shape, and
the callbacks to put before the logger (the fault, if any, applied in ``on_epoch_end``
of epoch `at`, so that the logger's step `at` is the first to see it).
"""

from __future__ import annotations

import keras
import numpy as np

from tbviz.cli.demo import article_model
from tbviz.data import load_shipped_mnist


def mnist(count: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``count`` shipped MNIST images to train on, ``(N, 28, 28, 1)`` in [0, 1], and the rest."""
    images, labels = load_shipped_mnist()
    images = images[..., None].astype("float32") / 255.0
    return (images[:count], labels[:count].astype("int32")), (images[count:], labels[count:])


def _compiled(model: keras.Model) -> keras.Model:
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    return model


class Fault(keras.callbacks.Callback):
    """Breaks the model so that the logger's step `at` is the first to see it: a layer's
    weights changed at the end of epoch `at`, or the optimizer's at its beginning."""

    def __init__(self, layer: str, change, at: int) -> None:
        super().__init__()
        self.layer, self.change, self.at = layer, change, at

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        if epoch == self.at and self.change is _STOP:
            self.model.optimizer.learning_rate.assign(0.0)  # updates of exactly 0 from now on

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if epoch == self.at and self.change is not _STOP:
            layer = self.model.get_layer(self.layer)
            layer.set_weights(self.change([np.array(w) for w in layer.get_weights()]))


def _nan_weight(weights):
    weights[0].flat[0] = np.nan
    return weights


def _STOP(weights):  # a learning rate of 0 (see Fault), not a change of weights
    raise AssertionError("not called")


#: The article CNN's fault per finding kind: (the layer it shows in first, the change of that
#: layer's [kernel, bias], or `_STOP`).
FAULTS = {
    "dead": ("conv2", lambda w: [w[0], np.full_like(w[1], -1e3)]),  # every unit below 0
    "saturated": ("dense", lambda w: [w[0] * 1e3, w[1]]),  # the sigmoid pinned at 0 or 1
    "exploding": ("conv1", lambda w: [w[0] * 1e3, w[1] * 1e3]),
    "vanishing": ("conv1", lambda w: [w[0] * 1e-3, w[1] * 1e-3]),
    "nonfinite": ("dense", _nan_weight),  # (TensorFlow's ReLU turns NaN into 0: a sigmoid's)
    "stalled": ("conv1", _STOP),  # every layer stops; the first with weights is conv1
}


def article(x, y, x_test, fault=None, at=1):
    """The article's CNN (`tbviz.cli.demo.article_model`), a fault of `FAULTS` or none."""
    callbacks = [Fault(*FAULTS[fault], at=at)] if fault else []
    return _compiled(article_model()), (x, y, x_test), callbacks


def resnet(x, y, x_test, fault=None, at=1):
    """A residual network with batch normalisation (two blocks)."""
    layers = keras.layers
    inputs = keras.Input((28, 28, 1))
    h = layers.ReLU(name="stem_relu")(layers.BatchNormalization(name="stem_bn")(
        layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(inputs)
    ))
    for block in (1, 2):
        r = layers.Conv2D(16, 3, padding="same", use_bias=False, name=f"b{block}_conv1")(h)
        r = layers.ReLU(name=f"b{block}_relu1")(layers.BatchNormalization(name=f"b{block}_bn1")(r))
        r = layers.Conv2D(16, 3, padding="same", use_bias=False, name=f"b{block}_conv2")(r)
        r = layers.BatchNormalization(name=f"b{block}_bn2")(r)
        h = layers.ReLU(name=f"b{block}_out")(layers.Add(name=f"b{block}_add")([h, r]))
        h = layers.MaxPooling2D(name=f"b{block}_pool")(h)
    outputs = layers.Dense(10, activation="softmax", name="head")(layers.GlobalAveragePooling2D()(h))
    return _compiled(keras.Model(inputs, outputs)), (x, y, x_test), []


def frozen_backbone(x, y, x_test, fault=None, at=1):
    """A backbone trained first (a pretrained one's stand-in), then frozen under a new head."""
    layers = keras.layers
    backbone = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(16, 3, activation="relu", name="conv1"),
            layers.MaxPooling2D(name="pool1"),
            layers.Conv2D(32, 3, activation="relu", name="conv2"),
            layers.GlobalAveragePooling2D(name="gap"),
        ],
        name="backbone",
    )
    pretrain = _compiled(keras.Sequential([backbone, layers.Dense(10, activation="softmax")]))
    pretrain.fit(x, y, epochs=1, batch_size=64, verbose=0)
    backbone.trainable = False
    inputs = keras.Input((28, 28, 1))
    h = layers.Dense(64, activation="relu", name="head_dense")(backbone(inputs, training=False))
    outputs = layers.Dense(10, activation="softmax", name="head")(h)
    return _compiled(keras.Model(inputs, outputs)), (x, y, x_test), []


class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding of each token's position (as Keras' ViT example's PatchEncoder)."""

    def __init__(self, length: int, width: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.length, self.embedding = length, keras.layers.Embedding(length, width)

    def call(self, tokens):
        return tokens + self.embedding(keras.ops.arange(self.length))


def transformer(x, y, x_test, fault=None, at=1):
    """A transformer encoder block over the image's 28 rows as tokens."""
    layers = keras.layers
    inputs = keras.Input((28, 28))
    h = PositionEmbedding(28, 32, name="position")(layers.Dense(32, name="embed")(inputs))
    a = layers.MultiHeadAttention(2, 16, name="attention")(h, h)
    h = layers.LayerNormalization(name="norm1")(layers.Add(name="add1")([h, a]))
    f = layers.Dense(32, name="ffn2")(layers.Dense(64, activation="relu", name="ffn1")(h))
    h = layers.LayerNormalization(name="norm2")(layers.Add(name="add2")([h, f]))
    outputs = layers.Dense(10, activation="softmax", name="head")(layers.GlobalAveragePooling1D()(h))
    return _compiled(keras.Model(inputs, outputs)), (x[..., 0], y, x_test[..., 0]), []


def lstm(x, y, x_test, fault=None, at=1):
    """Two LSTMs over the image's 28 rows."""
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((28, 28)),
            layers.LSTM(32, return_sequences=True, name="lstm1"),
            layers.LSTM(32, return_sequences=True, name="lstm2"),
            layers.GlobalAveragePooling1D(name="pool"),
            layers.Dense(10, activation="softmax", name="head"),
        ]
    )
    return _compiled(model), (x[..., 0], y, x_test[..., 0]), []


HEALTHY = {
    "article CNN": article,
    "ResNet with batch norm": resnet,
    "frozen backbone + head": frozen_backbone,
    "transformer encoder": transformer,
    "LSTM": lstm,
}
BROKEN = {"article": article, "faults": list(FAULTS)}
