"""The on-disk contract of tbviz: where it writes and under which tags.

This module is the single owner of the tag scheme. Everything that writes
(`tbviz.summary`) or reads (`tbviz.export`, the tests) goes through it. It
imports nothing from TensorFlow so that readers stay light.

Layout, inside the ``log_dir`` given to `ActivationLogger`:

    <log_dir>/activations/            the run (beside Keras' train/ and validation/)
        events.out.tfevents.*         one file per writer session

Tags in that run, one series per selected layer, ``step`` = Keras' 0-based
epoch index (the step Keras' ``TensorBoard`` callback gives ``epoch_*``):

    feature_maps/<layer>    image: one PNG per probe sample, the layer's maps
                            normalised, colour-mapped and tiled in a grid
    mean/<layer>            scalar: mean of the layer's finite activations
    std/<layer>             scalar: their standard deviation
    zero_fraction/<layer>   scalar: fraction of activations exactly 0 (dead ReLUs)
    distribution/<layer>    histogram of the finite activations
    change/<layer>          scalar: how much the layer's activations on the probe
                            batch changed since the previous logged epoch (from
                            the second logged epoch on; see below)

``<layer>`` is the layer's path: its name, or ``outer/inner`` for a layer inside
a nested model. A layer or nested model called more than once in its model (the
shared encoder of a siamese network) has one path per call, marked with the
call's position in the order the model was built: ``encoder@0/conv``,
``encoder@1/conv``. An input of the model has the input layer's name as its
path (its picture is the probe). Image summaries use TensorBoard's ``images`` plugin format:
a string tensor ``[width, height, png_0, ..., png_k-1]``.

``change/<layer>`` at step t is the relative L2 change ``||a - b|| / ||b||``
between two small, fixed-size summaries of the layer's activations on the
probe batch: ``a`` at step t, ``b`` at the previous logged step (so with
``freq=5`` it is the change over 5 epochs). The summary is the layer's maps
as pictured (the first ``max_channels`` channels, shrunk to fit
``max_size``), each map further shrunk by area averaging to at most
``COARSE_SIZE x COARSE_SIZE``, raw values before any normalisation: so it
sees changes of both pattern and magnitude. Positions that are NaN/Inf in
either are left out; ``||b|| == 0`` counts as ``||b||`` = 1e-12 (a dead layer
that stays dead: 0). 0 means no change; 0.1 means the activations moved by
10 % of their size; a layer that has stopped learning tends to 0.
"""

from __future__ import annotations

RUN_NAME = "activations"

IMAGE = "feature_maps"
MEAN = "mean"
STD = "std"
ZERO_FRACTION = "zero_fraction"
DISTRIBUTION = "distribution"
CHANGE = "change"

SCALAR_KINDS = (MEAN, STD, ZERO_FRACTION)  # the statistics scalars
KINDS = (IMAGE, *SCALAR_KINDS, DISTRIBUTION, CHANGE)

#: Each map is shrunk to at most this many pixels a side for the change metric.
COARSE_SIZE = 8

# Pictures are 8-bit palette PNGs whose indices are the normalised values: index
# i < LEVELS stands for i / (LEVELS - 1) in [0, 1]; the last two entries are reserved.
LEVELS = 254
SEPARATOR_INDEX = 254  # grid separators
NONFINITE_INDEX = 255  # NaN/Inf pixels, drawn in NONFINITE_COLOR
NONFINITE_COLOR = (255, 0, 255)  # magenta: in none of the usual colour maps


def tag(kind: str, layer_path: str) -> str:
    """Returns the tag of one series of one layer, e.g. ``feature_maps/conv2d``."""
    if kind not in KINDS:
        raise ValueError(f"Unknown tag kind; expected one of {KINDS}. Received: kind={kind!r}")
    return f"{kind}/{layer_path}"


def parse_tag(tag_name: str) -> tuple[str, str] | None:
    """Splits a tbviz tag into ``(kind, layer_path)``; None if it is not one of ours."""
    kind, sep, layer_path = tag_name.partition("/")
    if not sep or kind not in KINDS or not layer_path:
        return None
    return kind, layer_path
