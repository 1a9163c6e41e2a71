"""On the same weights and probe, JAX's and PyTorch's pictures equal TensorFlow's.

Each backend runs in its own process (tests/_backend_worker.py): the
article's CNN and a residual model with batch normalisation, every layer
(``layers="all"``), weights drawn from one seeded generator. The pictures
must match TensorFlow's palette index by palette index within one colour
level (separators and NaN marks exactly), the statistics within float
tolerance, and neither worker may have imported TensorFlow.
"""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tbviz.io import tags
from tbviz.io.reader import read_run

BACKENDS = ("tensorflow", "jax", "torch")
WORKER = os.path.join(os.path.dirname(__file__), "_backend_worker.py")


def log_on(backend, kind, log_dir):
    # TensorFlow unimportable off its backend: tests/startup/sitecustomize.py, on PYTHONPATH
    # (conftest.py), hides it from the worker's imports from its start.
    unimportable = "" if backend == "tensorflow" else "tensorflow"
    run = subprocess.run(
        [sys.executable, WORKER, backend, kind, str(log_dir)],
        env={**os.environ, "TBVIZ_TEST_UNIMPORTABLE": unimportable},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, f"{backend} worker failed:\n{run.stdout[-3000:]}\n{run.stderr[-6000:]}"
    assert "tensorflow imported: " + str(backend == "tensorflow") in run.stdout, run.stdout
    return read_run(os.path.join(str(log_dir), tags.RUN_NAME))


def indices(png):
    """A palette PNG's pixels as palette indices."""
    with Image.open(io.BytesIO(png)) as image:
        assert image.mode == "P"
        return np.asarray(image)


@pytest.mark.slow
@pytest.mark.backend_independent  # starts a process per backend itself: once, from the tensorflow run
@pytest.mark.parametrize("kind", ["article", "residual"])
def test_every_backend_pictures_what_tensorflow_does(tmp_path, kind):
    results = {b: log_on(b, kind, tmp_path / b) for b in BACKENDS}
    reference = results["tensorflow"]
    assert not reference.problems
    image_tags = sorted(reference.images)
    assert len(image_tags) >= (7 if kind == "article" else 12)  # every layer, the input first
    for backend in ("jax", "torch"):
        result = results[backend]
        assert not result.problems
        assert sorted(result.images) == image_tags
        assert sorted(result.scalars) == sorted(reference.scalars)
        for tag in image_tags:
            (expected,), (got,) = reference.images[tag], result.images[tag]
            assert len(got.pngs) == len(expected.pngs) == 4
            for a, b in zip(expected.pngs, got.pngs, strict=True):
                a, b = indices(a), indices(b)
                assert a.shape == b.shape, tag
                levels = (a < tags.LEVELS) & (b < tags.LEVELS)
                assert np.array_equal(a[~levels], b[~levels]), f"{backend} {tag}: separators/NaN"
                difference = np.abs(a[levels].astype(int) - b[levels].astype(int))
                assert difference.max(initial=0) <= 1, f"{backend} {tag}: {difference.max()} levels"
        for tag, values in reference.scalars.items():
            np.testing.assert_allclose(
                [v for _, v in result.scalars[tag]], [v for _, v in values], rtol=1e-4, atol=1e-5,
                err_msg=f"{backend} {tag}",
            )
        for tag, values in reference.histograms.items():
            (_, expected), (_, got) = values[0], result.histograms[tag][0]
            np.testing.assert_allclose(got[:, :2], expected[:, :2], rtol=1e-4, atol=1e-5)
            # A value on a bin edge may fall either side of it in float32.
            assert np.abs(got[:, 2] - expected[:, 2]).sum() <= 0.001 * expected[:, 2].sum() + 2
