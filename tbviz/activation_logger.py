"""`ActivationLogger`: a Keras callback that pictures feature maps every epoch."""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import keras
import numpy as np

from tbviz import capture, metadata, probes, steps
from tbviz import layers as layer_selection
from tbviz.change import relative_change
from tbviz.pictures import PictureOptions, channels_shown, fit_pixel_budget, picture_shape
from tbviz.stats import HISTOGRAM_BINS
from tbviz.summary import LayerSummaryWriter, layer_summary

# Pixels of all pictures of one logged epoch: about 4 to 5 MB of event file for every
# layer of a ResNet-50 at 8 probes; the 12-layer default at 8 probes stays under it.
DEFAULT_MAX_PIXELS_PER_EPOCH = 3_500_000

# PNG encoding threads; more than the cores only adds switching.
_ENCODING_THREADS = min(4, os.cpu_count() or 1)

_DIVERGING = {
    "BrBG", "PRGn", "PiYG", "PuOr", "RdBu", "RdGy", "RdYlBu", "RdYlGn", "Spectral",
    "bwr", "coolwarm", "seismic", "berlin", "managua", "vanimo",
}  # fmt: skip


class ActivationLogger(keras.callbacks.Callback):
    """Logs each selected layer's feature maps on a fixed probe batch to TensorBoard.

    At the end of every `freq`-th epoch the probe batch goes once through the
    model (in inference mode, in a step compiled once: see `tbviz.steps`), and each
    selected layer's output, the moment the layer returns it, becomes one
    picture per probe sample (its channels normalised, colour-mapped and tiled in a
    near-square grid; see `tbviz.pictures` for every output rank) written in
    ``tf.summary.image``'s format to the run ``<log_dir>/activations`` under
    the tag ``feature_maps/<layer path>``, at step = Keras' epoch index, beside
    mean, standard deviation, zero fraction and a histogram of the layer's
    activations, and (from the second logged epoch, whatever `stats` says)
    how much they changed since the previous logged epoch, ``change/<layer
    path>``. See `tbviz.metadata` for the tag scheme. PNG encoding and
    writing run on background threads; each epoch is flushed to disk, and
    everything is on disk when ``fit()`` returns.

    Functional and Sequential models, nested models (transfer learning: inner
    layers by path) and subclassed models (paths are the tracked attribute
    names) all work: the selected layers' ``call`` is wrapped while the step
    is traced (see `tbviz.capture`). In distributed training only one process
    writes (a multi-worker ``tf.distribute`` strategy's chief, JAX's process 0,
    PyTorch's rank 0); the others do no logging work.

    It works on Keras' TensorFlow, JAX and PyTorch backends alike, with the
    same tags, options and pictures; TensorFlow is needed only on its own
    backend (event files are written without it, see `tbviz.event_file`).

    Logging never stops training: a failure while picturing or writing is
    reported as a warning and the next epoch tries again. Mistakes in the
    arguments are reported before training starts (or, for a model whose
    inputs only exist once it has run, after its first batch).

    Args:
        probe_images: the fixed probe batch: an array ``(N, ...)`` matching the
            model's input, a list or dict of arrays for a model with several
            inputs, or a ``tf.data.Dataset`` whose first batch is taken
            (``(x, y)`` elements give ``x``).
        log_dir: the directory given to Keras' ``TensorBoard`` callback, if any;
            tbviz writes to its ``activations`` subdirectory. Defaults to `"logs"`.
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
        max_probes: the most probe samples pictured; a larger probe batch
            (say a whole test set passed by mistake) is cut to its first
            `max_probes` samples, with a warning. Defaults to `16`.
        model: the model to picture, when it is not the one ``fit()`` trains:
            the generator of a GAN (the probe is then a batch of latent
            vectors), a VAE's decoder, a backbone inside a custom training
            wrapper. The callback is still given to the wrapper's ``fit()``.
            Defaults to `None`: the model being trained.

    Example:

    ```python
    model.fit(x, y, epochs=20, callbacks=[
        keras.callbacks.TensorBoard(log_dir="logs/mnist"),
        tbviz.ActivationLogger(x_test[:4], log_dir="logs/mnist"),
    ])
    # tensorboard --logdir logs/mnist --samples_per_plugin images=100000
    ```
    """

    def __init__(
        self,
        probe_images: Any,
        *,
        log_dir: str | os.PathLike = "logs",
        layers: layer_selection.LayerSelection = None,
        freq: int = 1,
        normalize: str = "map",
        clip_percentile: float = 1.0,
        value_range: tuple[float, float] | None = None,
        cmap: str = "viridis",
        max_channels: int = 64,
        max_size: int = 256,
        max_layers: int = 12,
        max_pixels_per_epoch: int | None = DEFAULT_MAX_PIXELS_PER_EPOCH,
        stats: bool = True,
        histograms: bool = True,
        max_probes: int = 16,
        model: keras.Model | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(max_probes, int) or max_probes < 1:
            raise ValueError(
                f"`max_probes` must be a positive integer. Received: max_probes={max_probes!r}"
            )
        if model is not None and not isinstance(model, keras.Model):
            raise TypeError(
                "`model` must be a keras.Model (the model to picture, e.g. a GAN's generator). "
                f"Received: model={model!r} of type {type(model).__name__}"
            )
        self.probe = probes.capped(probes.as_probe(probe_images), max_probes)
        self.pictured_model = model
        self.log_dir = _checked_log_dir(log_dir)
        if not isinstance(freq, int) or freq < 1:
            raise ValueError(f"`freq` must be a positive integer. Received: freq={freq!r}")
        if not isinstance(max_layers, int) or max_layers < 1:
            raise ValueError(
                f"`max_layers` must be a positive integer. Received: max_layers={max_layers!r}"
            )
        if max_pixels_per_epoch is not None and (
            not isinstance(max_pixels_per_epoch, int) or max_pixels_per_epoch < 1
        ):
            raise ValueError(
                "`max_pixels_per_epoch` must be a positive integer or None (no budget). "
                f"Received: max_pixels_per_epoch={max_pixels_per_epoch!r}"
            )
        if value_range is not None:
            if normalize != "fixed":
                raise ValueError(
                    "`value_range` is only used with normalize='fixed'. "
                    f"Received: value_range={value_range!r}, normalize={normalize!r}"
                )
            if len(value_range) != 2 or not float(value_range[0]) < float(value_range[1]):
                raise ValueError(
                    "`value_range` must be (low, high) with low < high. "
                    f"Received: value_range={value_range!r}"
                )
        self.options = PictureOptions(
            normalize=normalize,
            clip_percentile=float(clip_percentile),
            cmap=cmap,
            symmetric=cmap.removesuffix("_r") in _DIVERGING,
            max_channels=max_channels,
            max_size=max_size,
        )
        self.layers = layers
        self.freq = freq
        self.value_range = value_range
        self.max_layers = max_layers
        self.max_pixels_per_epoch = max_pixels_per_epoch
        self.stats = stats
        self.histograms = histograms
        self._writer = LayerSummaryWriter(self.log_dir)
        self._encoders: ThreadPoolExecutor | None = None  # PNG encoding, while fit() runs
        self._executor: ThreadPoolExecutor | None = None  # the writer thread
        self._writing: tuple[int, Future] | None = None  # the epoch being written
        self._reset()

    # -- Keras hooks -------------------------------------------------------------

    def set_model(self, model: keras.Model) -> None:
        if model is not getattr(self, "_model_seen", None):
            self._reset()
            self._model_seen = model
        super().set_model(model)

    def on_train_begin(self, logs: Mapping | None = None) -> None:
        self._active = steps.writes_summaries(self.model)
        if self._active and self._step is None:
            target = self._target()
            if _has_inputs(target):
                self._build_unless_kernel_missing()

    def on_train_batch_end(self, batch: int, logs: Mapping | None = None) -> None:
        # A Sequential model without an Input gets its inputs during the first batch.
        if self._active and self._step is None:
            self._build_unless_kernel_missing()

    def on_epoch_end(self, epoch: int, logs: Mapping | None = None) -> None:
        if not self._active or epoch % self.freq:
            return
        # At most one epoch is being written while the next one is computed.
        self._wait_for_writes()
        try:
            if self._step is None:
                self._build()
            layers = self._log(epoch)
        except (ValueError, TypeError) as error:
            if self._step is None:
                raise  # a mistake in the arguments: say so instead of logging nothing
            _warn(f"could not log epoch {epoch}: {error}")
        except steps.StepUnavailable as error:
            self._active = False  # nothing changes that in this fit()
            _warn(f"could not log: {error}")
        except Exception as error:  # noqa: BLE001 -- a picture must never stop training
            missing = steps.missing_kernel(self.pictured_model or self.model, error)
            if missing:
                self._active = False  # the kernel will not appear later in this process
            _warn(f"could not log epoch {epoch}: {missing or f'{type(error).__name__}: {error}'}")
        else:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="tbviz-writer")
            self._writing = (epoch, self._executor.submit(self._write, epoch, layers))

    def on_train_end(self, logs: Mapping | None = None) -> None:
        # Everything logged is on disk when fit() returns.
        self._wait_for_writes()
        if self._encoders is not None:  # idle threads: let them go until the next fit()
            self._encoders.shutdown()
            self._encoders = None
        try:
            self._writer.close()
        except Exception as error:  # noqa: BLE001
            _warn(f"could not close the event file in {self._writer.run_dir}: {error}")

    # -- building ----------------------------------------------------------------

    def _build_unless_kernel_missing(self) -> None:
        # Building a subclassed model runs it once; a missing kernel, or a step that cannot
        # run in this setting, must not stop training.
        try:
            self._build()
        except steps.StepUnavailable as error:
            self._active = False
            _warn(f"could not log: {error}")
        except Exception as error:
            missing = steps.missing_kernel(self.pictured_model or self.model, error)
            if not missing:
                raise
            self._active = False
            _warn(f"could not log: {missing}")

    def _reset(self) -> None:
        self._step: steps.Step | None = None
        self._selected: list[layer_selection.SelectedLayer] = []
        self._descriptions: list[str] = []
        self._fixed_ranges: list[tuple[float, float]] = []
        self._previous: dict[str, np.ndarray] = {}  # layer path -> coarse maps of the last logged epoch
        self._active = True

    def _target(self) -> keras.Model:
        """The model to picture: `model=`, else the one being trained, which must have a `call`."""
        if self.pictured_model is not None:
            return self.pictured_model
        model = self.model
        if not _has_call(model):
            inner = [
                f"{model.name}.{attribute}"
                for attribute, value in vars(model).items()
                if isinstance(value, keras.Model) and not attribute.startswith("_")
            ]
            raise ValueError(
                f"Model '{model.name}' ({type(model).__name__}) has no `call()`: it trains "
                f"the models it holds ({', '.join(inner) or 'none found'}) in its own "
                "`train_step`, so there is no forward pass to run the probe through. Pass the "
                "model to picture as `model=`, e.g. "
                f"ActivationLogger(probe, model={inner[0] if inner else 'generator'}), with a "
                "probe that matches that model's input."
            )
        return model

    def _build(self) -> None:
        model = self._target()
        graph = _has_inputs(model)
        if not graph and isinstance(model, keras.Sequential):
            raise ValueError(
                f"Sequential model '{model.name}' has no inputs yet; give it a `keras.Input` "
                "or build it before training."
            )
        inputs = model.inputs if graph else None
        structure = getattr(model, "input", None) if graph and not isinstance(model, keras.Sequential) else None
        probe = probes.match_model_inputs(self.probe, inputs, structure)
        if isinstance(structure, dict):  # the model is called with the structure it was built on
            probe = keras.tree.pack_sequence_as(structure, keras.tree.flatten(probe))
        entries = layer_selection.walk(model)
        if layer_selection.needs_capture(entries):  # a subclassed model, or one inside: run it once
            with steps.local_weights(model):
                entries = capture.capture_entries(model, probe, entries)
        selected = layer_selection.select_layers(
            model, self.layers, max_layers=self.max_layers, entries=entries
        )
        usable = []
        for entry in selected:
            reason = layer_selection.unusable_reason(entry)
            if reason:
                _warn(f"layer '{entry.path}' is skipped: {reason}.")
            else:
                usable.append(entry)
        if not usable:
            raise ValueError(
                f"None of the selected layers of model '{model.name}' can be pictured "
                f"(selected: {', '.join(e.path for e in selected) or 'none'})."
            )
        layer_options = self._budgeted_options(usable, probes.sample_count(probe))
        wants_stats = self.stats or self.histograms
        summaries = [
            steps.Summary(options, entry.channels_first, wants_stats)
            for entry, options in zip(usable, layer_options, strict=True)
        ]
        # How often each tapped layer runs in one forward pass, by the walk: a check that
        # the calls counted at run time are the ones the entries are keyed on.
        expected_calls: dict[int, int] = {}
        for entry in entries:
            if entry.input_index is None and not entry.needs_capture:
                key = id(entry.layer)
                expected_calls[key] = max(expected_calls.get(key, 0), entry.call + 1)
        # A model compiled with run_eagerly=True may not be traceable: then eagerly, as fit() does.
        self._step = steps.build_step(
            model,
            probe,
            usable,
            summaries,
            expected_calls,
            eager=bool(getattr(model, "run_eagerly", False)),
        )
        self._selected = usable
        self._descriptions = [
            _description(e, o, self.options, self.max_pixels_per_epoch)
            for e, o in zip(usable, layer_options, strict=True)
        ]
        initial = (
            (float(self.value_range[0]), float(self.value_range[1]))
            if self.value_range
            else (np.nan, np.nan)
        )
        if len(self._fixed_ranges) != len(usable):
            self._fixed_ranges = [initial] * len(usable)

    def _budgeted_options(
        self, layers: list[layer_selection.SelectedLayer], samples: int
    ) -> list[PictureOptions]:
        """Each layer's picture options: `options`, with pictures made smaller where all of
        them would not fit in `max_pixels_per_epoch` (see `tbviz.pictures.fit_pixel_budget`)."""
        options = self.options
        limits = fit_pixel_budget(
            [(e.shape or (), e.channels_first) for e in layers],
            probes=samples,
            max_pixels=self.max_pixels_per_epoch,
            max_channels=options.max_channels,
            max_size=options.max_size,
            padding=options.padding,
        )
        made = {(options.max_size, options.max_channels): options}
        for size, channels in limits:
            if (size, channels) not in made:  # each distinct one once: it builds a palette
                made[size, channels] = dataclasses.replace(
                    options, max_size=size, max_channels=channels
                )
        return [made[limit] for limit in limits]

    # -- logging -----------------------------------------------------------------

    def _ranges(self) -> np.ndarray:
        """The fixed ranges, ``(layers, 2)`` float32, as the step takes them (NaN: not yet fixed)."""
        return np.array(self._fixed_ranges, np.float32).reshape(-1, 2)

    def _log(self, epoch: int) -> list[tuple[str, str, np.ndarray, dict[str, np.ndarray]]]:
        """Runs the probe through the model; returns ``(path, description, pictures, stats)`` per layer."""
        if self._step is None:
            raise RuntimeError("the logging step is not built yet")
        results = self._step(self._ranges())
        layers = []
        for i, (entry, (pictures, numbers, coarse)) in enumerate(
            zip(self._selected, results, strict=True)
        ):
            lo, hi, nonfinite = numbers[:3]
            if self.options.normalize == "fixed" and not np.isfinite(self._fixed_ranges[i][0]):
                self._fixed_ranges[i] = (float(lo), float(hi))
            stats = {"nonfinite": nonfinite}
            if len(numbers) > 3:  # see `tbviz.summarize.finish_layer` for the layout
                stats.update(zip(metadata.SCALAR_KINDS, numbers[3:6], strict=True))
                stats["histogram"] = numbers[6:].reshape(HISTOGRAM_BINS, 3)
            stats[metadata.CHANGE] = self._change(entry.path, coarse)
            if stats["nonfinite"]:
                _warn(
                    f"layer '{entry.path}' has {int(stats['nonfinite'])} NaN/Inf activations at "
                    f"epoch {epoch}; they are drawn magenta and left out of its statistics."
                )
            layers.append((entry.path, self._descriptions[i], pictures, stats))
        return layers

    def _change(self, path: str, coarse: np.ndarray) -> float | None:
        """The layer's change since the previous logged epoch (see `tbviz.metadata`); keeps `coarse`."""
        previous, self._previous[path] = self._previous.get(path), coarse
        return None if previous is None else relative_change(coarse, previous)

    def _write(self, epoch: int, layers: list) -> None:
        """Writes one epoch (on the writer thread), then flushes it to disk.

        The layers' PNGs are encoded on a few threads at once (the compressor releases
        the GIL), so that an epoch of many layers is written before the next
        one needs the writer; they are written in order as they are ready.
        """

        def encode(layer: tuple) -> bytes:
            path, description, pictures, stats = layer
            scalars = {k: stats[k] for k in metadata.SCALAR_KINDS} if self.stats else {}
            if stats[metadata.CHANGE] is not None:
                scalars[metadata.CHANGE] = stats[metadata.CHANGE]
            return layer_summary(
                path,
                pictures,
                self.options.palette,
                description=description,
                statistics=scalars,
                histogram=stats["histogram"] if self.histograms else None,
            )

        if self._encoders is None:
            self._encoders = ThreadPoolExecutor(
                _ENCODING_THREADS, thread_name_prefix="tbviz-encoder"
            )
        encoders = self._encoders
        encoded = [encoders.submit(encode, layer) for layer in layers]
        try:
            for future in encoded:
                self._writer.write_summary(epoch, future.result())
        finally:
            for future in encoded:
                future.cancel()  # after a failure: encode no more of this epoch
            self._writer.flush()  # what was written is safe, whatever happens next

    def _wait_for_writes(self) -> None:
        """Waits for the epoch being written, if any, and reports its failure as a warning."""
        if self._writing is None:
            return
        (epoch, future), self._writing = self._writing, None
        try:
            future.result()
        except Exception as error:  # noqa: BLE001 -- a write failure must never stop training
            _warn(f"could not write epoch {epoch}: {type(error).__name__}: {error}")


def _warn(message: str) -> None:
    warnings.warn(f"tbviz.ActivationLogger: {message}", RuntimeWarning, stacklevel=3)


def _description(
    entry: layer_selection.SelectedLayer,
    options: PictureOptions,
    asked: PictureOptions,
    budget: int | None,
) -> str:
    """The card's text; says what the epoch's pixel budget shrank, if anything."""
    text = (
        f"Layer `{entry.path}` ({type(entry.layer).__name__}), output shape {entry.shape}, "
        f"one picture per probe sample. normalize={asked.normalize!r}, "
        f"clip_percentile={asked.clip_percentile}, cmap={asked.cmap!r}, "
        f"max_channels={asked.max_channels}, max_size={asked.max_size}. "
        "Magenta pixels are NaN/Inf."
    )
    if options == asked:
        return text

    def size(max_channels: int, max_size: int) -> tuple[int, int] | None:
        return picture_shape(
            entry.shape or (),
            channels_first=entry.channels_first,
            max_channels=max_channels,
            max_size=max_size,
            padding=asked.padding,
        )

    full = size(asked.max_channels, asked.max_size)
    small = size(options.max_channels, options.max_size)
    if small == full:
        return text  # this layer's picture is within the smaller limits anyway
    shrunk = [f"{small[0]}x{small[1]} px instead of {full[0]}x{full[1]}"] if small and full else []
    shown, before = (
        channels_shown(
            entry.shape or (), channels_first=entry.channels_first, max_channels=o.max_channels
        )
        for o in (options, asked)
    )
    if shown < before:
        shrunk.append(f"the first {shown} channels instead of {before}")
    return (
        f"{text} Made smaller to keep each logged epoch within max_pixels_per_epoch={budget:,} "
        f"pixels: {' and '.join(shrunk) or f'max_size={options.max_size}'}."
    )


def _checked_log_dir(log_dir: Any) -> str:
    try:
        path = os.fspath(log_dir)
    except TypeError:
        raise TypeError(
            f"`log_dir` must be a path (str or os.PathLike). Received: log_dir={log_dir!r}"
        ) from None
    if not path:
        raise ValueError("`log_dir` must be a non-empty path. Received: log_dir=''")
    if "://" not in path:  # leave remote file systems (gs://, s3://) to TensorFlow
        # Check without creating anything: the writer makes the directories when it first writes.
        existing = os.path.abspath(path)
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            raise ValueError(
                f"`log_dir` cannot be created: {existing!r} is a file, not a directory. "
                f"Received: log_dir={path!r}"
            )
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(
                f"`log_dir` is not writable: no write permission on {existing!r}. "
                f"Received: log_dir={path!r}"
            )
    return path


def _has_call(model: keras.Model) -> bool:
    """False for a training wrapper (a GAN) that defines `train_step` but no `call`."""
    return any(
        "call" in vars(cls) for cls in type(model).__mro__ if cls not in _BASE_MODEL_CLASSES
    )


_BASE_MODEL_CLASSES = set(keras.Model.__mro__)


def _has_inputs(model: keras.Model) -> bool:
    try:
        return bool(model.inputs)
    except (AttributeError, ValueError):
        return False

