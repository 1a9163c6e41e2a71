"""Logs one epoch of a model with fixed weights on the Keras backend named on the command line.

    python tests/_backend_worker.py BACKEND MODEL LOG_DIR

Run by tests/test_backend_equality.py once per backend, each in its own
process (a process has one Keras backend). On JAX and PyTorch TensorFlow is
made unimportable first (TBVIZ_TEST_UNIMPORTABLE, set by the test, applied at start-up
by tests/startup/sitecustomize.py), so the run also shows that nothing needs it. The
model's weights are drawn from a seeded NumPy generator in the order of
``model.weights`` (the same on every backend), the probe is the shipped
MNIST's first digits, and the callback is driven through the hooks ``fit()``
calls, with no training step in between, so that every backend pictures
exactly the same weights.
"""

import os
import sys
import warnings

backend, kind, log_dir = sys.argv[1:4]
os.environ["KERAS_BACKEND"] = backend
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tbviz import ActivationLogger  # noqa: E402
from tbviz.cli.demo import article_model  # noqa: E402
from tbviz.data import load_shipped_mnist  # noqa: E402


def residual_model() -> keras.Model:
    """Two residual blocks, convolution, batch normalisation and ReLU, as in a ResNet."""
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="stem")(inputs)
    for block in ("block1", "block2"):
        y = keras.layers.Conv2D(16, 3, padding="same", name=f"{block}_conv")(x)
        y = keras.layers.BatchNormalization(name=f"{block}_bn")(y)
        y = keras.layers.ReLU(name=f"{block}_relu")(y)
        x = keras.layers.Add(name=f"{block}_add")([x, y])
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="head")(x), name="residual")


images, labels = load_shipped_mnist()
probe = (images[[np.flatnonzero(labels == digit)[0] for digit in range(4)]] / 255.0).astype(
    np.float32
)[..., np.newaxis]
model = {"article": article_model, "residual": residual_model}[kind]()
model.build((None, 28, 28, 1))
rng = np.random.default_rng(0)
for weight in model.weights:
    if weight.path.endswith(("moving_variance", "gamma")):
        value = rng.uniform(0.5, 1.5, weight.shape)
    else:
        fan_in = int(np.prod(weight.shape[:-1])) if len(weight.shape) > 1 else 16
        value = rng.normal(0.0, 1.0 / np.sqrt(fan_in), weight.shape)
    weight.assign(value.astype(weight.dtype))

logger = ActivationLogger(probe, log_dir=log_dir, layers="all")
logger.set_model(model)
with warnings.catch_warnings():
    warnings.simplefilter("error")  # a failed epoch is a warning: fail instead
    logger.on_train_begin()
    logger.on_epoch_end(0)
    logger.on_train_end()
print("tensorflow imported:", "tensorflow" in sys.modules)
