"""The logging step on every backend (tbviz/step/), trained for real.

Each backend runs in its own process (tests/_step_worker.py); on JAX and
PyTorch TensorFlow cannot be imported there. The statistics logged at each
epoch must be those of the weights at that epoch's end (on JAX the weights are
arguments of the compiled step, not constants baked into it, which would
show the first epoch's weights forever), and the step must be compiled once
(JAX, TensorFlow) however many epochs are logged.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import read_activations

from tbviz.io import tags

# Each backend in its own worker process, started from the TensorFlow run.
pytestmark = pytest.mark.backend_independent

WORKER = os.path.join(os.path.dirname(__file__), "_step_worker.py")
EPOCHS = 3


@pytest.fixture(scope="module", params=["tensorflow", "jax", "torch"])
def trained(request, tmp_path_factory):
    """The worker's result and log directory for one backend."""
    directory = tmp_path_factory.mktemp(request.param)
    # TensorFlow unimportable off its backend: tests/startup/sitecustomize.py, on PYTHONPATH
    # (conftest.py), hides it from the worker's imports from its start.
    unimportable = "" if request.param == "tensorflow" else "tensorflow"
    run = subprocess.run(
        [sys.executable, WORKER, request.param, str(directory), str(directory / "result.json")],
        env={**os.environ, "TBVIZ_TEST_UNIMPORTABLE": unimportable},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return request.param, json.loads((directory / "result.json").read_text()), directory


@pytest.mark.parametrize(("run", "layer"), [("sequential", "conv_a"), ("submodel", "inner_b")])
def test_each_epoch_pictures_that_epochs_weights(trained, run, layer):
    """The mean logged at every epoch is the layer's mean on the probe with that epoch's weights;
    the weights change, so a step holding on to old ones would fail this."""
    backend, result, directory = trained
    logged = read_activations(directory / run)
    assert not logged.problems
    assert [s.step for s in logged.images[tags.tag(tags.IMAGE, layer)]] == [0, 1, 2]
    means = logged.scalars[tags.tag(tags.MEAN, layer)]
    assert [step for step, _ in means] == list(range(EPOCHS))
    direct = result[run]["means"]
    np.testing.assert_allclose([value for _, value in means], direct, rtol=1e-4, atol=1e-6)
    assert len({round(value, 4) for value in direct}) == EPOCHS, direct  # the weights did change


def test_step_is_compiled_once(trained):
    """JAX and TensorFlow trace the step's forward pass once for all epochs; PyTorch runs it eagerly each epoch."""
    backend, result, _ = trained
    expected = EPOCHS if backend == "torch" else 1
    assert result["sequential"]["forward_passes"] == expected
    assert result["submodel"]["forward_passes"] == expected


def test_jax_and_torch_train_without_tensorflow(trained):
    """On JAX and PyTorch nothing imports TensorFlow (it is unimportable in the worker)."""
    backend, result, _ = trained
    assert result["tensorflow_imported"] == (backend == "tensorflow")
