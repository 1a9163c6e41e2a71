"""The Activations dashboard: a TensorBoard dynamic plugin, the ACTIVATIONS tab.

Installed with tbviz through the ``tensorboard_plugins`` entry point, so plain
``tensorboard --logdir LOGDIR`` shows it. Its server side (`server`) reads
tbviz's runs with `tbviz.io.reader` -- every logged step, whatever TensorBoard's
``--samples_per_plugin`` -- and serves JSON and pictures; its page
(``static/index.js``, a plain ES module, and ``static/style.css``) is loaded
by TensorBoard in an iframe.

The loader also changes one TensorBoard default (`ActivationsLoader.fix_flags`):
when the command line gives no sample count for the ``images`` plugin,
TensorBoard keeps `IMAGE_SAMPLES` steps per image tag instead of 10, so that
the stock Images dashboard shows every epoch too. A ``--logdir`` URL needs no
other flag: `tbviz.io.writer` uploads one event file per logged epoch, named
in order, and both of TensorBoard's loaders read them all (docs/remote.md).
Where TensorBoard cannot open the URL (TensorFlow installed, ``s3://``), it
says what to run instead before TensorBoard stops.
"""

from __future__ import annotations

import shlex
import sys

from tensorboard.plugins import base_plugin

from tbviz.io import fs
from tbviz.io.tags import PLUGIN_NAME

__all__ = ["IMAGE_SAMPLES", "PLUGIN_NAME", "ActivationsLoader"]

#: Steps kept per image tag by TensorBoard's loaders when the user named no count for
#: ``images``: every epoch of any real run. (``images=0``, "keep all", is broken:
#: tensorflow/tensorboard#5550.)
IMAGE_SAMPLES = 100000


class ActivationsLoader(base_plugin.TBLoader):
    """Loads the Activations plugin and keeps every image step in TensorBoard's own loaders."""

    def fix_flags(self, flags) -> None:
        """Adds ``images=IMAGE_SAMPLES`` to ``--samples_per_plugin`` unless it names ``images``.

        TensorBoard calls this after parsing its flags and before it builds
        its data loader (the Python one or the Rust data server), which
        samples at load time.
        """
        samples = getattr(flags, "samples_per_plugin", None)
        if isinstance(samples, dict) and "images" not in samples:
            samples["images"] = IMAGE_SAMPLES
        logdir = getattr(flags, "logdir", None) or ""
        if fs.is_url(logdir):
            problem = unreadable_url(logdir)
            if problem:
                print(f"tbviz: {problem}", file=sys.stderr, flush=True)

    def load(self, context: base_plugin.TBContext):
        from tbviz.plugin.server import ActivationsPlugin

        return ActivationsPlugin(context)


def unreadable_url(url: str) -> str | None:
    """Why this process's TensorBoard cannot read the log directory `url`, and what to run
    instead; None when it can (as far as can be told without asking the server).

    TensorBoard reads through ``tf.io.gfile`` where TensorFlow is installed (whose
    file systems have no ``s3://``), through its own stub elsewhere (``s3://`` by
    boto3, other URLs by fsspec).
    """
    from tensorboard.compat import tf

    protocol = url.partition("://")[0]
    registered = getattr(tf.io.gfile, "get_registered_schemes", None)
    if registered is None:  # TensorBoard's TensorFlow-free stub
        if protocol == "s3" and _importable("boto3"):
            return None
        try:
            fs.require(url)
        except fs.RemoteUnavailable as error:
            return f"TensorBoard cannot read {fs.redact(url)}: {error}"
        return None
    if protocol in registered():
        return None
    return (
        f"TensorBoard reads --logdir through TensorFlow here, whose file systems do not "
        f"include {protocol}:// ({', '.join(s for s in registered() if s) or 'none'}). "
        "tbviz board serves the same dashboards, the ACTIVATIONS tab included, without "
        f"TensorFlow's file systems:\n    tbviz board {shlex.quote(fs.redact(url))}"
    )


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
