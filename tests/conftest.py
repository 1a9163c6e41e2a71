"""Shared test helpers: small real models and reading event files back; the backend of a run.

**One Keras backend per run.** Keras fixes its backend when it is first
imported, so a test process runs on one: ``TBVIZ_TEST_BACKEND`` (``tensorflow``,
the default, ``jax`` or ``torch``). `python -m pytest -q` runs everything: the
tests themselves on TensorFlow, and tests/test_backends.py runs the suite again
in two child processes, ``TBVIZ_TEST_BACKEND=jax`` and ``=torch`` (one backend
at a time: ``TBVIZ_TEST_BACKEND=jax python -m pytest -q``). Every test runs on
every backend, the same test wherever the behaviour is meant to be the same,
except those with one of these markers (pyproject.toml registers them):

- ``tensorflow_only``: needs TensorFlow itself (``tf.distribute``, ``tf.data``,
  ``tf.io.gfile``, a ``tf.GradientTape`` train step, Keras' own ``TensorBoard``
  callback, a TensorFlow kernel's failure); likewise ``jax_only`` (JAX's own
  multi-process runtime) and ``torch_only``: run on the backends marked only;
- ``backend_independent``: does not depend on the backend (event files, the
  plugin, the CLI on logs, the browser, pure-Python arithmetic), so it runs
  once, in the TensorFlow run.

**On jax and torch, TensorFlow is unimportable** in the test process and in
every process a test starts (``TBVIZ_TEST_UNIMPORTABLE=tensorflow``, enforced by
tests/startup/sitecustomize.py, on ``PYTHONPATH``): every test there also shows
that tbviz, Keras and TensorBoard (which falls back to its stub) do their work
without importing it, whether or not it is installed.

**The same settings whatever the machine.** Before Keras is imported (here,
and in every subprocess a test starts, which inherits this environment) the
backend is pinned to ``KERAS_BACKEND=<TBVIZ_TEST_BACKEND>`` and Keras reads its
settings from a fresh, empty ``KERAS_HOME``, so a user's ``~/.keras/keras.json``
(image data format, floatx, backend) or ``KERAS_MAX_EPOCHS`` cannot change what
the tests see.
"""

import atexit
import importlib
import os
import shutil
import sys
import tempfile

import pytest

BACKENDS = ("tensorflow", "jax", "torch")
BACKEND = os.environ.get("TBVIZ_TEST_BACKEND", "tensorflow")
if BACKEND not in BACKENDS:
    raise pytest.UsageError(
        f"TBVIZ_TEST_BACKEND must be one of {', '.join(BACKENDS)} (the Keras backend the tests "
        f"run on; unset: tensorflow). Received: TBVIZ_TEST_BACKEND={BACKEND!r}"
    )
STARTUP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "startup")

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of the output
os.environ["KERAS_BACKEND"] = BACKEND
os.environ["KERAS_HOME"] = tempfile.mkdtemp(prefix="tbviz-tests-keras-home-")
atexit.register(shutil.rmtree, os.environ["KERAS_HOME"], ignore_errors=True)
for _name in ("KERAS_MAX_EPOCHS", "KERAS_MAX_STEPS_PER_EPOCH", "TF_USE_LEGACY_KERAS"):
    os.environ.pop(_name, None)
if BACKEND == "tensorflow":
    os.environ.pop("TBVIZ_TEST_UNIMPORTABLE", None)
else:
    os.environ["TBVIZ_TEST_UNIMPORTABLE"] = "tensorflow"
os.environ["PYTHONPATH"] = os.pathsep.join(
    [STARTUP, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
)
sys.path.insert(0, STARTUP)
import sitecustomize  # noqa: E402  (a child process ran it at start-up; this one, now)

sitecustomize.install()

try:
    import keras  # noqa: E402
except ModuleNotFoundError as _error:
    raise pytest.UsageError(
        f"The tests run on Keras' {BACKEND!r} backend (TBVIZ_TEST_BACKEND), which needs "
        f"{_error.name!r}, not installed here: pip install -e '.[test,{BACKEND}]', or set "
        f"TBVIZ_TEST_BACKEND to an installed backend ({', '.join(BACKENDS)})"
    ) from _error
import numpy as np  # noqa: E402

# The 2-epoch `tbviz demo` log, trained once per session, shared by the CLI tests.
from _cli_support import demo_log  # noqa: E402,F401

from tbviz.io import tags  # noqa: E402
from tbviz.io.reader import ReadResult, read_run  # noqa: E402


def pytest_report_header(config):
    blocked = os.environ.get("TBVIZ_TEST_UNIMPORTABLE")
    return f"Keras backend: {BACKEND} (TBVIZ_TEST_BACKEND)" + (
        f"; unimportable: {blocked}" if blocked else ""
    )


def pytest_collection_modifyitems(config, items):
    """Leaves out the tests marked for other backends only (`<backend>_only`, one or
    more), and on jax and torch those marked backend_independent."""
    kept, left_out = [], []
    for item in items:
        only = {b for b in BACKENDS if item.get_closest_marker(f"{b}_only")}
        once = BACKEND != "tensorflow" and item.get_closest_marker("backend_independent")
        (left_out if (only and BACKEND not in only) or once else kept).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


def logging_warnings(caught) -> list[str]:
    """The messages of tbviz's warnings about its logging among the recorded `caught`: every
    ``TbvizWarning`` but the layer-health findings, which are about the model (these tests'
    models are untrained, on random data; tests/test_health.py tests the findings)."""
    from tbviz import LayerHealthWarning, TbvizWarning

    return [
        str(w.message) for w in caught
        if issubclass(w.category, TbvizWarning) and not issubclass(w.category, LayerHealthWarning)
    ]  # fmt: skip


def expected_tags(paths, *, inputs=(), outputs=()) -> set[str]:
    """Every tag tbviz writes for the layers at `paths` with its defaults: all of
    `tags.KINDS`, but no dead channels for the model's `inputs` (the data's) and no
    saturation for its `inputs` and `outputs` (see docs/health.md)."""
    left_out = {(tags.DEAD_CHANNELS, p) for p in inputs}
    left_out |= {(tags.SATURATION, p) for p in (*inputs, *outputs)}
    return {tags.tag(kind, p) for kind in tags.KINDS for p in paths if (kind, p) not in left_out}


def decode_png(png: bytes) -> np.ndarray:
    """Decodes a PNG to an ``(H, W, 3)`` uint8 array (Pillow: a reader independent of tbviz's writer)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"))


def read_activations(log_dir) -> ReadResult:
    """Everything tbviz wrote under `log_dir`, read from the event files."""
    return read_run(os.path.join(os.fspath(log_dir), tags.RUN_NAME))


def pictures_at(result: ReadResult, layer_path: str, step: int) -> list[np.ndarray]:
    """The decoded pictures of one layer at one step, one per probe sample."""
    (logged,) = [s for s in result.images[tags.tag(tags.IMAGE, layer_path)] if s.step == step]
    return [decode_png(png) for png in logged.pngs]


def small_cnn(input_shape=(12, 12, 1), with_input=True, seed=0) -> keras.Sequential:
    """A small trainable CNN: conv(8, relu) -> pool -> conv(4, relu) -> flatten -> dense(3)."""
    keras.utils.set_random_seed(seed)
    layers = [
        keras.layers.Conv2D(8, 3, activation="relu", name="conv_a"),
        keras.layers.MaxPooling2D(name="pool_a"),
        keras.layers.Conv2D(4, 3, activation="relu", name="conv_b"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(3, activation="softmax", name="head"),
    ]
    model = keras.Sequential(([keras.Input(input_shape)] if with_input else []) + layers)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


@pytest.fixture
def data():
    """32 random 12x12 images with 3-class labels, and a probe of 3 of them."""
    rng = np.random.default_rng(0)
    x = rng.random((32, 12, 12, 1), dtype=np.float32)
    y = rng.integers(0, 3, 32)
    return x, y, x[:3]


@pytest.fixture
def tensorboard_servers(monkeypatch):
    """Every TensorBoard server a test starts in this process, shut down when the test ends.

    ``TensorBoard.launch()`` serves forever from a daemon thread and keeps no handle on
    the server; TensorBoard makes it with ``program.create_port_scanning_werkzeug_server``
    (unless given another ``server_class``), which this records.
    """
    # The module itself: `from tensorboard import program` gives a lazy-loading stand-in.
    program = importlib.import_module("tensorboard.program")
    servers = []
    make = program.create_port_scanning_werkzeug_server

    def recording(wsgi_app, flags):
        servers.append(make(wsgi_app, flags))
        return servers[-1]

    monkeypatch.setattr(program, "create_port_scanning_werkzeug_server", recording)
    yield servers
    for server in servers:
        server.shutdown()  # returns once serve_forever has ended
        server.server_close()
        assert server.socket.fileno() == -1  # the listening socket is closed
