"""`ActivationLogger`: a Keras callback that pictures feature maps every epoch.

The callback only wires: its arguments are checked by `tbviz.callback.config`,
its step is built by `tbviz.callback.build` (once per ``fit()``), its epochs
are written by `tbviz.io.writer.RunWriter` in the background.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from typing import Any

import keras
import numpy as np

from tbviz import step as steps
from tbviz._warnings import LayerHealthWarning, warn
from tbviz.callback.build import Built, build, has_inputs, target_model
from tbviz.callback.config import (
    DEFAULT_MAX_LAYERS,
    DEFAULT_MAX_PIXELS_PER_EPOCH,
    DEFAULT_MAX_PROBES,
    LoggerConfig,
)
from tbviz.io import tags
from tbviz.io.fs import redact
from tbviz.io.reader import existing_event_files
from tbviz.io.summaries import LayerRecord
from tbviz.io.writer import RunWriter
from tbviz.model import probes
from tbviz.model.selection import LayerSelection
from tbviz.numerics.change import relative_change
from tbviz.numerics.health import Health, HealthMonitor, onset_message
from tbviz.numerics.pictures import DEFAULT_MAX_CHANNELS, DEFAULT_MAX_SIZE
from tbviz.numerics.summary import LayerNumbers


class ActivationLogger(keras.callbacks.Callback):
    """Logs each selected layer's feature maps on a fixed probe batch to TensorBoard.

    At the end of every `freq`-th epoch the probe batch goes once through the
    model (in inference mode, in a step compiled once: see `tbviz.step`), and each
    selected layer's output, the moment the layer returns it, becomes one
    picture per probe sample (its channels normalised, colour-mapped and tiled in a
    near-square grid; see `tbviz.numerics.layout` for every kind of output) written in
    ``tf.summary.image``'s format to the run ``<log_dir>/activations`` under
    the tag ``feature_maps/<layer path>``, at step = Keras' epoch index, beside
    mean, standard deviation, zero fraction and a histogram of the layer's
    activations, and (from the second logged epoch, whatever `stats` says)
    how much they changed since the previous logged epoch, ``change/<layer
    path>``. See `tbviz.io.tags` for the tag scheme. PNG encoding and
    writing run on background threads; each epoch is flushed to disk, and
    everything is on disk when ``fit()`` returns.

    Functional and Sequential models, nested models (transfer learning: inner
    layers by path) and subclassed models (paths are the tracked attribute
    names) all work: the selected layers' ``call`` is wrapped while the step
    is traced (see `tbviz.model.capture`). In distributed training only one process
    writes (a multi-worker ``tf.distribute`` strategy's chief, JAX's process 0,
    PyTorch's rank 0); the others do no logging work.

    It works on Keras' TensorFlow, JAX and PyTorch backends alike, with the
    same tags, options and pictures; TensorFlow is needed only on its own
    backend (event files are written without it, see `tbviz.io.writer`).

    Logging never stops training: a failure while picturing or writing is
    reported as a warning and the next epoch tries again. Mistakes in the
    arguments are reported before training starts (or, for a model whose
    inputs only exist once it has run, after its first batch).

    Args:
        probe_images: the fixed probe batch, anything Keras' ``fit`` takes as
            ``x``: an array or tensor ``(N, ...)`` matching the model's input
            (a missing or extra last axis of size 1 is adjusted, as Keras
            does), a list or dict of them for a model with several inputs, or
            a ``tf.data.Dataset``, ``keras.utils.PyDataset``, PyTorch
            ``DataLoader`` or generator whose first batch is taken (``(x, y)``
            elements give ``x``).
        log_dir: the directory given to Keras' ``TensorBoard`` callback, if any;
            tbviz writes to its ``activations`` subdirectory. A URL
            (``s3://bucket/logs``, ``gs://...``, any fsspec URL) writes to
            object storage (``pip install 'tbviz[remote]'`` and the file
            system's package). Defaults to `"logs"`.
        layers: which layers to log: None for the default (layers with a
            spatial or sequence output, reaching into nested models, except
            input, dropout, padding, cropping and reshape layers and Keras'
            preprocessing and augmentation layers; past `max_layers`, block
            outputs spread evenly over the depth; a model with no such layer
            gets its Dense layers); ``"all"`` for every layer whose output
            can be pictured, in model order, the model's input first (as
            the reference the others are read against), leaving out only
            dropout, padding, cropping and reshape layers, Keras'
            preprocessing and augmentation layers, and nested models
            themselves (their inner layers are in); or a layer name, a
            path into a nested model (``"backbone/block_1_relu"``;
            ``"encoder@1/conv"`` for the second call of a nested model
            called twice, ``"encoder/conv"`` for every call), a glob pattern
            (``"conv*"``), a compiled regular expression, a layer class, a
            layer object, or a list of these (in a list, ``"all"`` is a
            layer name). The model's input layer can be selected too: its
            picture is the probe as the model sees it. Defaults to `None`.
        freq: log every `freq` epochs (epochs 0, freq, 2 * freq, ...).
            Defaults to `1`.
        normalize: ``"map"``: one contrast per feature map, to see the
            pattern in each map however weak it is; ``"layer"``: one scale for
            all maps of the layer and all probe samples, so channels can be
            compared (the article's picture); ``"fixed"``: like ``"layer"``
            but the scale of the first logged epoch (or `value_range`) is kept
            for all later epochs, so brightness can be compared along the
            step slider. Defaults to `"map"`.
        clip_percentile: the percent of values clipped at each end of the range
            so that a few outliers cannot wash out a map; 0 uses min and max.
            Defaults to `1.0`.
        value_range: with ``normalize="fixed"``, a ``(low, high)`` range to use
            instead of the first logged epoch's. Defaults to `None`.
        cmap: any matplotlib colour-map name: ``"viridis"`` (the article's),
            ``"gray"``, or a diverging map such as ``"RdBu_r"`` for signed
            activations (diverging maps put 0 in the middle). Defaults to
            `"viridis"`.
        max_channels: at most this many channels per layer (the first ones).
            Defaults to `64`.
        max_size: each picture fits in ``max_size x max_size`` pixels; larger
            maps are shrunk by area averaging. Defaults to `256`.
        max_layers: the most layers the default selection picks. Defaults to `12`.
        max_pixels_per_epoch: the most pixels all pictures of one logged
            epoch may have together (layers x probe samples x picture
            size): past it, pictures are made smaller, the largest first,
            down to maps of 8 x 8 pixels, and only then are channels
            dropped (``max_channels`` halved until it fits); each card's
            description says what was made smaller. The default, 3.5
            million (about 53 pictures of 256 x 256), leaves the 12-layer
            default choice with up to 8 probe samples of a ResNet-50 as
            it is and keeps every layer of it within 5 MB an epoch. None:
            no budget. Defaults to `3_500_000`.
        stats: log mean, std and zero-fraction scalars per layer. Defaults to `True`.
        histograms: log a histogram of each layer's activations. Defaults to `True`.
        health: judge each layer's health at every logged epoch: which layer is
            dead, saturated, exploding, vanishing or has NaN/Inf, since which
            step (see docs/health.md). Each finding is written beside the
            pictures (``tbviz report`` and the ACTIVATIONS tab list them) and
            warned of once, the epoch it begins, as a
            ``tbviz.LayerHealthWarning``; its figures are logged as scalars.
            NaN/Inf are warned of whatever it says. Defaults to `True`.
        max_probes: the most probe samples pictured; a larger probe batch
            (say a whole test set passed by mistake) is cut to its first
            `max_probes` samples, with a warning. Defaults to `16`.
        model: the model to picture, when it is not the one ``fit()`` trains:
            the generator of a GAN (the probe is then a batch of latent
            vectors), a VAE's decoder, a backbone inside a custom training
            wrapper. The callback is still given to the wrapper's ``fit()``.
            Defaults to `None`: the model being trained.
        notebook: in a notebook (an IPython kernel: Jupyter, Colab, VS Code),
            show the viewer of this run under the training cell, one output
            replaced at each logged epoch and left there when training ends
            (`tbviz.show`'s viewer, self-contained); each logged epoch is then
            written before training goes on. Outside a notebook it does
            nothing. Defaults to `False`.

    Example:

    ```python
    model.fit(x, y, epochs=20, callbacks=[
        keras.callbacks.TensorBoard(log_dir="logs/mnist"),
        tbviz.ActivationLogger(x_test[:4], log_dir="logs/mnist"),
    ])
    # tensorboard --logdir logs/mnist, then the ACTIVATIONS tab
    ```
    """

    def __init__(
        self,
        probe_images: Any,
        *,
        log_dir: str | os.PathLike = "logs",
        layers: LayerSelection = None,
        freq: int = 1,
        normalize: str = "map",
        clip_percentile: float = 1.0,
        value_range: tuple[float, float] | None = None,
        cmap: str = "viridis",
        max_channels: int = DEFAULT_MAX_CHANNELS,
        max_size: int = DEFAULT_MAX_SIZE,
        max_layers: int = DEFAULT_MAX_LAYERS,
        max_pixels_per_epoch: int | None = DEFAULT_MAX_PIXELS_PER_EPOCH,
        stats: bool = True,
        histograms: bool = True,
        health: bool = True,
        max_probes: int = DEFAULT_MAX_PROBES,
        model: keras.Model | None = None,
        notebook: bool = False,
    ) -> None:
        super().__init__()
        self.config = LoggerConfig.checked(
            log_dir=log_dir,
            layers=layers,
            freq=freq,
            normalize=normalize,
            clip_percentile=clip_percentile,
            value_range=value_range,
            cmap=cmap,
            max_channels=max_channels,
            max_size=max_size,
            max_layers=max_layers,
            max_pixels_per_epoch=max_pixels_per_epoch,
            stats=stats,
            histograms=histograms,
            health=health,
            max_probes=max_probes,
            model=model,
            notebook=notebook,
        )
        self.probe = probes.capped(probes.as_probe(probe_images), self.config.max_probes)
        self._writer = RunWriter(self.config.log_dir)
        self._writing: tuple[int, Future] | None = None  # the epoch being written
        self._live: Any = None  # notebook=True: the viewer under the cell; False outside one
        self._reset()

    @property
    def log_dir(self) -> str:
        return self.config.log_dir

    # -- Keras hooks -------------------------------------------------------------

    def set_model(self, model: keras.Model) -> None:
        if model is not getattr(self, "_model_seen", None):
            self._reset()
            self._model_seen = model
        super().set_model(model)

    def on_train_begin(self, logs: Mapping | None = None) -> None:
        self._active = steps.writes_summaries(self.model)
        self._offset: int | None = None  # this fit's step offset, fixed at its first epoch
        self._live = None  # notebook=True: each fit() shows under its own cell
        if self._active and self._built is None:
            if has_inputs(target_model(self.model, self.config.model)):
                self._build()

    def on_train_batch_end(self, batch: int, logs: Mapping | None = None) -> None:
        # A Sequential model without an Input gets its inputs during the first batch.
        if self._active and self._built is None:
            self._build()

    def on_epoch_end(self, epoch: int, logs: Mapping | None = None) -> None:
        if not self._active or self._built is None:
            return
        step = epoch + self._step_offset(epoch)
        if step % self.config.freq:
            return
        self._wait_for_writes()  # one epoch in flight at most: memory stays one epoch's
        with self._failures(f"log epoch {step}"):
            records = self._log(step)
            self._writing = (step, self._writer.submit(step, records))
        if self.config.notebook:
            self._show_in_notebook()

    def on_train_end(self, logs: Mapping | None = None) -> None:
        # Everything logged is on disk when fit() returns.
        self._wait_for_writes()
        with self._failures(f"close the event file in {redact(self._writer.run_dir)}"):
            self._writer.close()
        self._warn_uploads()

    # -- building ----------------------------------------------------------------

    def _reset(self) -> None:
        self._built: Built | None = None
        self._fixed: dict[str, tuple[float, float]] = {}  # layer path -> its fixed range
        self._previous: dict[str, np.ndarray] = {}  # layer path -> coarse maps of the last logged epoch
        self._monitor: HealthMonitor | None = None
        self._active = True

    def _build(self) -> None:
        # Mistakes in the arguments raise (before training, or after its first batch); a step
        # that cannot run in this setting, or a kernel missing here, turns logging off.
        model = target_model(self.model, self.config.model)
        try:
            self._built = build(model, self.probe, self.config)
        except steps.StepUnavailable as error:
            self._active = False
            warn(f"could not log: {error}")
            return
        except Exception as error:
            reason = steps.explain_failure(model, error)
            if not reason:
                raise
            self._active = False
            warn(f"could not log: {reason}")
            return
        for layer in self._built.layers:
            self._fixed.setdefault(layer.entry.path, layer.fixed_range)
        self._monitor = HealthMonitor(
            [layer.facts for layer in self._built.layers], probes.sample_count(self.probe)
        )

    @contextlib.contextmanager
    def _failures(self, what: str) -> Iterator[None]:
        """The one failure policy once training runs: a failure is a warning, never an
        exception; one that means the step can never run here also turns logging off."""
        try:
            yield
        except Exception as error:  # noqa: BLE001 -- logging must never stop training
            model = self.config.model or self.model
            reason = steps.explain_failure(model, error) if model is not None else None
            if reason:
                self._active = False  # it will not work later in this process either
            warn(f"could not {what}: {reason or f'{type(error).__name__}: {error}'}")

    def _step_offset(self, epoch: int) -> int:
        """How far this fit's steps are moved on: a fit that starts again at epoch 0, after
        epochs this process logged to the same run, goes on after them (nothing logged is
        hidden), with one warning; otherwise 0 (``initial_epoch`` is Keras' epoch)."""
        if self._offset is None:
            last = self._writer.last_step
            self._offset = 0 if last is None or epoch > 0 else last + 1
            if last is not None and self._offset:
                warn(
                    f"this fit() starts again at epoch 0, but epochs up to {last} are already "
                    f"logged in {redact(self._writer.run_dir)}: its epochs are logged as steps "
                    f"{self._offset}, {self._offset + 1}, ... so that nothing is hidden. Pass "
                    f"initial_epoch={last + 1} to fit() to number them so in Keras too."
                )
            elif last is None and epoch == 0 and existing_event_files(self._writer.run_dir):
                warn(
                    f"{redact(self._writer.run_dir)} already holds event files of an earlier run; the "
                    "epochs of this one replace theirs in the viewers (their files stay). Use "
                    "another log_dir for a run of its own."
                )
        return self._offset

    # -- logging -----------------------------------------------------------------

    def _log(self, step: int) -> list[LayerRecord]:
        """Runs the step on the probe; returns each layer's record for the writer."""
        assert self._built is not None and self._monitor is not None
        config, results = self.config, self._built.step(self._ranges())
        unpacked = [LayerNumbers.unpack(vector) for _, vector, _ in results]
        changes = [
            self._change(planned.entry.path, coarse)
            for planned, (_, _, coarse) in zip(self._built.layers, results, strict=True)
        ]
        healths = [self._health(n, change) for n, change in zip(unpacked, changes, strict=True)]
        findings, onsets = self._monitor.observe(step, healths)
        for message in onset_message(onsets):
            warn(message, LayerHealthWarning)
        records = []
        for planned, (pictures, _, _), numbers, change, health, found in zip(
            self._built.layers, results, unpacked, changes, healths, findings, strict=True
        ):
            path = planned.entry.path
            if planned.options.normalize == "fixed" and not np.isfinite(self._fixed[path][0]):
                self._fixed[path] = (numbers.lo, numbers.hi)
            scalars = dict(numbers.statistics or {}) if config.stats else {}
            if config.health:
                scalars.update(health.scalars(planned.facts))
            if change is not None:
                scalars[tags.CHANGE] = change
            records.append(
                LayerRecord(
                    path,
                    pictures,
                    planned.options.palette,
                    info=planned.info,
                    scalars=scalars,
                    histogram=numbers.histogram if config.histograms else None,
                    findings=found if config.health else None,
                )
            )
        return records

    def _change(self, path: str, coarse_maps: np.ndarray) -> float | None:
        """The layer's change since its last logged epoch (None at its first); remembers these."""
        previous, self._previous[path] = self._previous.get(path), coarse_maps
        return None if previous is None else relative_change(coarse_maps, previous)

    def _health(self, numbers: LayerNumbers, change: float | None) -> Health:
        """A layer's health numbers; without ``health=``, only its NaN/Inf count is judged."""
        if not self.config.health:
            return Health(0, np.nan, np.nan, np.nan, numbers.nonfinite)
        return dataclasses.replace(numbers.health, change=np.nan if change is None else change)

    def _ranges(self) -> np.ndarray:
        """The fixed ranges, ``(layers, 2)`` float32, as the step takes them (NaN: not yet fixed)."""
        assert self._built is not None
        fixed = [self._fixed[p.entry.path] for p in self._built.layers]
        return np.array(fixed, np.float32).reshape(-1, 2)

    def _show_in_notebook(self) -> None:
        """Writes the epoch, then shows the run so far under the cell (`notebook=True`)."""
        self._wait_for_writes()
        with self._failures("show the epoch in the notebook"):
            if self._live is None:
                from tbviz.plugin.notebook import LiveView

                self._live = LiveView.start(self._writer.run_dir) or False
            if self._live:
                self._live.update()

    def _wait_for_writes(self) -> None:
        """Waits for the epoch being written, if any, and reports its failure as a warning."""
        if self._writing is None:
            return
        (step, future), self._writing = self._writing, None
        with self._failures(f"write epoch {step}"):
            future.result()
        self._warn_uploads()

    def _warn_uploads(self) -> None:
        """A log_dir URL's upload failures and recoveries, reported by the writer's thread."""
        for notice in self._writer.notices():
            warn(notice)
