"""A fresh Python process for tests/test_models.py: channels_first models without NCHW kernels.

    python tests/_no_nchw_worker.py LOG_DIR RESULT_JSON

Run with ``TF_ENABLE_ONEDNN_OPTS=0``: TensorFlow then uses its own CPU kernels on
every x86-64 CPU, and those take channels_last (NHWC) only, which is what a user
gets by default on a CPU without AVX512-VNNI, AVX512-BF16, AVX-VNNI or AMX (an
AMD EPYC before Zen 4, for one). The setting is read once, when TensorFlow
starts: hence a fresh process.

Two channels_first models, a Sequential one and a subclassed one (which tbviz
runs once, eagerly, to find its layers), train for 2 epochs under XLA
(``jit_compile=True``, which has NCHW convolutions), with an ActivationLogger
each. The JSON result says whether oneDNN was on, the losses and every warning.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from tensorflow.python.util import _pywrap_util_port  # noqa: E402

import tbviz  # noqa: E402

FIRST = "channels_first"


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__(name="subclassed")
        self.conv = keras.layers.Conv2D(4, 3, data_format=FIRST, name="conv")
        self.flat = keras.layers.Flatten(data_format=FIRST)
        self.head = keras.layers.Dense(3, activation="softmax")

    def call(self, x):
        return self.head(self.flat(self.conv(x)))


def sequential():
    return keras.Sequential(
        [
            keras.Input((3, 12, 12)),
            keras.layers.Conv2D(4, 3, data_format=FIRST, name="conv"),
            keras.layers.ReLU(name="relu"),
            keras.layers.MaxPooling2D(data_format=FIRST, name="pool"),
            keras.layers.Flatten(data_format=FIRST),
            keras.layers.Dense(3, activation="softmax"),
        ],
        name="sequential",
    )


def main() -> None:
    log_dir, result_path = sys.argv[1:3]
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 3, 12, 12), dtype=np.float32), rng.integers(0, 3, 16)
    result = {"onednn": bool(_pywrap_util_port.IsMklEnabled())}
    for name, make in (("sequential", sequential), ("subclassed", Subclassed)):
        keras.utils.set_random_seed(0)
        model = make()
        model.compile("sgd", "sparse_categorical_crossentropy", jit_compile=True)
        logger = tbviz.ActivationLogger(x[:2], log_dir=os.path.join(log_dir, name))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            history = model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[logger])
        result[name] = {
            "loss": [float(v) for v in history.history["loss"]],
            "warnings": [str(w.message) for w in caught],
        }
    with open(result_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
