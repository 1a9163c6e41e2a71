"""Trains small models with ActivationLogger on the Keras backend named on the command line.

    python tests/_step_worker.py BACKEND LOG_DIR RESULT_JSON

Run by tests/test_steps.py once per backend, each in its own process (a
process has one Keras backend); on JAX and PyTorch TensorFlow is made
unimportable first (TBVIZ_TEST_UNIMPORTABLE, set by the test, applied at
start-up by tests/startup/sitecustomize.py). Two runs, 3 epochs each, with weights that change a lot
from epoch to epoch (SGD at a large learning rate):

- ``sequential``: a Sequential CNN without ``Input`` (built on its first
  batch), probed with uint8 images though it takes float32;
- ``submodel``: a Functional backbone inside a model, pictured with
  ``model=backbone``, as a GAN's generator is.

After the logger, at every epoch's end, a callback records the mean of one
pictured layer's output on the probe, computed directly; and the number of
times the step's forward pass ran in Python (traced or eager) is counted.
"""

import json
import os
import sys

backend, log_dir, result_path = sys.argv[1:4]
os.environ["KERAS_BACKEND"] = backend
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tbviz import ActivationLogger  # noqa: E402
from tbviz.step import base as steps  # noqa: E402

EPOCHS = 3
forward_passes = 0
_forward = steps.Step._forward


def counted(*args, **kwargs):
    global forward_passes
    forward_passes += 1
    return _forward(*args, **kwargs)


steps.Step._forward = counted


class DirectMean(keras.callbacks.Callback):
    """At each epoch's end, the mean of `layer`'s output on `probe`, from a model of its own."""

    def __init__(self, owner: keras.Model, layer: str, probe: np.ndarray) -> None:
        super().__init__()
        self.owner, self.layer, self.probe, self.means = owner, layer, probe, []

    def on_epoch_end(self, epoch, logs=None):
        outputs = keras.Model(self.owner.inputs, self.owner.get_layer(self.layer).output)
        value = outputs(keras.ops.convert_to_tensor(self.probe, "float32"), training=False)
        self.means.append(float(np.mean(keras.ops.convert_to_numpy(value), dtype=np.float64)))


def train(model: keras.Model, x, y, logger, direct) -> None:
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=EPOCHS, batch_size=8, shuffle=False, verbose=0, callbacks=[logger, direct])


rng = np.random.default_rng(0)
x = rng.integers(0, 256, (32, 12, 12, 1)).astype(np.uint8)
y = rng.integers(0, 3, 32)
probe = x[:3]
result = {}

keras.utils.set_random_seed(0)
sequential = keras.Sequential(
    [
        keras.layers.Rescaling(1 / 255, name="scale"),
        keras.layers.Conv2D(8, 3, activation="relu", name="conv_a"),
        keras.layers.GlobalAveragePooling2D(name="gap"),
        keras.layers.Dense(3, activation="softmax", name="head"),
    ]
)
logger = ActivationLogger(probe, log_dir=os.path.join(log_dir, "sequential"), layers=["conv_a"])
direct = DirectMean(sequential, "conv_a", probe)
forward_passes = 0
train(sequential, x.astype(np.float32), y, logger, direct)
result["sequential"] = {"means": direct.means, "forward_passes": forward_passes}

keras.utils.set_random_seed(0)
inner = keras.Input((12, 12, 1))
hidden = keras.layers.Conv2D(4, 3, activation="relu", name="inner_a")(inner)
backbone = keras.Model(inner, keras.layers.Conv2D(4, 3, name="inner_b")(hidden), name="backbone")
outer = keras.Input((12, 12, 1))
head = keras.layers.Dense(3, activation="softmax", name="head")
model = keras.Model(outer, head(keras.layers.GlobalAveragePooling2D()(backbone(outer))))
scaled = x.astype(np.float32) / 255
logger = ActivationLogger(scaled[:3], log_dir=os.path.join(log_dir, "submodel"), model=backbone)
direct = DirectMean(backbone, "inner_b", scaled[:3])
forward_passes = 0
train(model, scaled, y, logger, direct)
result["submodel"] = {"means": direct.means, "forward_passes": forward_passes}

result["tensorflow_imported"] = "tensorflow" in sys.modules
with open(result_path, "w") as f:
    json.dump(result, f)
