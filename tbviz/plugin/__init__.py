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
the stock Images dashboard shows every epoch too.
"""

from __future__ import annotations

from tensorboard.plugins import base_plugin

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

    def load(self, context: base_plugin.TBContext):
        from tbviz.plugin.server import ActivationsPlugin

        return ActivationsPlugin(context)
