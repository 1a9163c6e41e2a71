"""Every Keras backend: the suite again on JAX and PyTorch, TensorFlow unimportable there.

Keras fixes its backend when it is first imported, so one pytest process tests
one backend (``TBVIZ_TEST_BACKEND``, see conftest.py). The TensorFlow run, the
default, runs `test_suite_passes_on_backend` for ``jax`` and ``torch``: each
is a fresh ``python -m pytest`` over the same tests, less those marked
``tensorflow_only`` or ``backend_independent``, with TensorFlow unimportable in
it and in every process it starts. So `python -m pytest -q` is the whole suite
on all three backends.
"""

import importlib
import importlib.metadata
import importlib.util
import os
import subprocess
import sys

import keras
import pytest
from conftest import BACKEND, STARTUP

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OTHER_BACKENDS = ["jax", "torch"]
# One backend's run may take this long before it counts as hung: a guard, not a speed goal
# (about 5 minutes on an idle 2-core machine, three times that on a loaded one).
TIMEOUT = 2400


@pytest.mark.backend_independent  # starts the other backends' runs: from the tensorflow run only
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_suite_passes_on_backend(backend):
    """The suite, on Keras' `backend` with TensorFlow unimportable, passes (its report on failure)."""
    env = {**os.environ, "TBVIZ_TEST_BACKEND": backend, "TBVIZ_TEST_UNIMPORTABLE": "tensorflow"}
    process = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", "--tb=short",
         "tests"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert process.returncode == 0, (
        f"TBVIZ_TEST_BACKEND={backend} python -m pytest -q tests: exit status "
        f"{process.returncode}; its output (the end):\n{process.stdout[-20000:]}"
        f"\n{process.stderr[-5000:]}"
    )


def test_the_run_is_on_its_backend_and_tensorflow_is_unimportable_off_it():
    """Keras runs on TBVIZ_TEST_BACKEND; off TensorFlow, no import of it succeeds, here or in a child process, and TensorBoard uses its stub."""
    assert keras.config.backend() == BACKEND
    if BACKEND == "tensorflow":
        return
    blocked = "No module named 'tensorflow'"
    assert "tensorflow" not in sys.modules and importlib.util.find_spec("tensorflow") is None
    for name in ("tensorflow", "tensorflow.python.util"):
        with pytest.raises(ModuleNotFoundError, match=blocked):
            importlib.import_module(name)
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.version("tensorflow")
    from tensorboard.compat import tf

    assert tf.__version__ == "stub"  # TensorBoard's stand-in for TensorFlow
    child = subprocess.run(
        [sys.executable, "-c", "import tensorflow"], capture_output=True, text=True, timeout=60
    )
    assert child.returncode == 1 and blocked in child.stderr, child.stderr


@pytest.mark.backend_independent
def test_no_backend_installed_says_what_to_install(tmp_path):
    """With no Keras backend importable, `from tbviz import ActivationLogger` and `tbviz demo` say what to install."""
    env = {**os.environ, "TBVIZ_TEST_UNIMPORTABLE": "tensorflow,jax,torch", "PYTHONPATH": STARTUP}
    del env["KERAS_BACKEND"]  # Keras' default backend: tensorflow
    wanted = (
        "tbviz needs Keras with its backend installed, and the backend's package 'tensorflow' "
        "is not installed (KERAS_BACKEND is not set, so Keras takes the backend from "
        "~/.keras/keras.json, else tensorflow). Install one backend: pip install "
        "'tbviz[tensorflow]' (the default backend), or pip install 'tbviz[jax]' and set "
        "KERAS_BACKEND=jax, or pip install 'tbviz[torch]' and set KERAS_BACKEND=torch. "
        "Received: ModuleNotFoundError: No module named 'tensorflow'"
    )
    imported = subprocess.run(
        [sys.executable, "-c", "from tbviz import ActivationLogger"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert imported.returncode == 1
    assert f"ModuleNotFoundError: {wanted}" in imported.stderr, imported.stderr
    demo = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "tbviz"), "demo", "--logdir",
         str(tmp_path / "logs")],
        env={**env, "KERAS_BACKEND": "jax", "TBVIZ_TEST_UNIMPORTABLE": "jax"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert demo.returncode == 1 and demo.stdout == "", demo.stdout
    assert demo.stderr.startswith(
        "tbviz demo: error: tbviz needs Keras with its backend installed, and the backend's "
        "package 'jax' is not installed (KERAS_BACKEND=jax). Install one backend:"
    ), demo.stderr
    assert demo.stderr.count("\n") == 1 and not (tmp_path / "logs").exists()
