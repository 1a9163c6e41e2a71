"""Writes one layer's pictures and statistics for one step; owns all ``tf.summary`` use.

Tags come from `tbviz.metadata`. Every write is explicit about its step and
is wrapped in ``record_if(True)``: Keras' ``TensorBoard`` callback with an
``update_freq`` other than ``"epoch"`` pushes a global ``record_if`` for the
whole ``fit()`` that would otherwise silently drop our epoch-end summaries.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from tensorboard.plugins.histogram import metadata as histogram_metadata

from tbviz import metadata


class LayerSummaryWriter:
    """A file writer for the tbviz run of one ``log_dir``, created on first use."""

    def __init__(self, log_dir: str) -> None:
        self.run_dir = os.path.join(log_dir, metadata.RUN_NAME)
        self._writer: tf.summary.SummaryWriter | None = None

    def _get(self) -> tf.summary.SummaryWriter:
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.run_dir)
        return self._writer

    def write(
        self,
        layer_path: str,
        step: int,
        pictures: np.ndarray,
        *,
        description: str = "",
        statistics: dict[str, np.ndarray] | None = None,
        histogram: np.ndarray | None = None,
    ) -> None:
        """Writes the pictures ``(N, H, W, 3)`` uint8 and optional statistics of one layer."""
        with self._get().as_default(step=step), tf.summary.record_if(True):
            tf.summary.image(
                metadata.tag(metadata.IMAGE, layer_path),
                pictures,
                max_outputs=len(pictures),
                description=description,
            )
            for kind, value in (statistics or {}).items():
                tf.summary.scalar(metadata.tag(kind, layer_path), value)
            if histogram is not None:
                tag = metadata.tag(metadata.DISTRIBUTION, layer_path)
                tf.summary.write(
                    tag,
                    tf.constant(histogram, tf.float64),
                    metadata=histogram_metadata.create_summary_metadata(tag, ""),
                )

    def flush(self) -> None:
        """Makes everything written so far visible on disk (and to a running TensorBoard)."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flushes and closes; a later `write` opens a new event file."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
