"""Layer health: the numbers the step measures, and the findings judged from them.

Two parts, like the rest of a layer's summary:

- **In the step** (``keras.ops``, the same on every backend), from what the
  step reads anyway: `constant_channels` counts the channels that hold one
  value (0 for a ReLU) on every probe sample and position, over the full
  output; `bound_shares` gives the share of the statistics' sample
  (`tbviz.numerics.stats.sample`) pinned at each bound of a bounded
  activation. Both ride in the layer's numbers vector
  (`tbviz.numerics.summary.LayerNumbers`), beside the NaN/Inf count and the
  mean and standard deviation its scale (RMS) is taken from.
- **On the host** (plain Python): `HealthMonitor` turns each logged epoch's
  numbers into findings (`tbviz.io.tags.Finding`): which layer is
  ``dead``, ``saturated``, ``exploding``, ``vanishing`` or ``nonfinite``, since
  which step, with the figure that says so. The thresholds are module
  constants; docs/health.md gives the measurements they rest on.

Everything is measured on the probe batch only: a few probe samples can show
a live channel as dead (a feature none of them has). So ``dead`` is claimed
only for a layer whose channels each have at least `MIN_VALUES_PER_CHANNEL`
values on the probe (samples x positions: a Dense layer's units on 4 probe
images are not), and only when at least `DEAD_SHARE` of its channels are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from keras import ops

from tbviz.io import tags
from tbviz.numerics.layout import Layout

# -- thresholds (measured: docs/health.md) --------------------------------------------------

#: A layer is dead when at least this share of its channels is constant on the probe.
DEAD_SHARE = 0.5
#: ... and only if each channel has at least this many values on the probe.
MIN_VALUES_PER_CHANNEL = 64
#: A bounded layer is saturated when at least this share of its values is at a bound.
SATURATED_SHARE = 0.5
#: Exploding: the RMS grew this many times over the layer's first logged epoch's.
EXPLODING_RATIO = 100.0
#: Vanishing: the RMS fell to this fraction of the layer's first logged epoch's.
VANISHING_RATIO = 0.01
#: Stalled: a trainable layer with weights whose activations changed by at most this much
#: (`tbviz.numerics.change.relative_change`) since the previous logged epoch: its weights did
#: not move at all. A layer that settled after learning still moves by far more.
STALLED_CHANGE = 1e-6

#: Bounded activations (Keras' names): ``(low, high, margin)``; a value within `margin` of a
#: bound counts as at it. Smooth ones within 1 % of their range; piecewise-linear ones exactly.
BOUNDS: dict[str, tuple[float, float, float]] = {
    "sigmoid": (0.0, 1.0, 0.01),
    "tanh": (-1.0, 1.0, 0.02),
    "softmax": (0.0, 1.0, 0.01),
    "hard_sigmoid": (0.0, 1.0, 0.0),
    "hard_tanh": (-1.0, 1.0, 0.0),
    "relu6": (0.0, 6.0, 0.0),
}
# At 0 a ReLU6 is a ReLU at rest, not saturated (that is `dead`); a softmax's values are
# mostly near 0 by design: only their upper bound (a row near one-hot) counts.
_UPPER_ONLY = ("relu6", "softmax")

#: The bounds of a layer whose activation Keras does not name as bounded: its output's
#: observed range. Only the top counts (values exactly at the observed maximum: a clip
#: at a bound of its own); at the bottom sit a ReLU's zeros, which are `dead`'s business.
OBSERVED = (math.nan, math.nan, 0.0)

#: Kinds whose later layers follow an earlier one (a NaN, a scale, a constant input): a
#: new finding of any kind after one of these is "propagated" (info); the first in model
#: order is the one to fix.
PROPAGATING = (tags.NONFINITE_FINDING, tags.EXPLODING, tags.VANISHING, tags.DEAD)
#: Kinds whose later layers of the same kind follow the first (a pooling layer after a
#: layer with dead channels has them too; a stalled network stalls from the back).
SAME_KIND = (tags.DEAD, tags.SATURATED, tags.STALLED)


# -- in the step ---------------------------------------------------------------------------


def channel_axis(layout: Layout) -> int:
    """The axis of `layout`'s channels in the output (batch axis included)."""
    if layout.kind in ("block", "tokens"):
        return -1
    return 1 if layout.channels_first else -1


def constant_channels(x: Any, layout: Layout) -> Any:
    """How many channels of `x` hold a single value over every sample and position, float32.

    Two reductions over the full output (its per-channel max and min). A
    channel holding a NaN is not counted (its max is NaN).
    """
    x = ops.convert_to_tensor(x)
    axis = channel_axis(layout) % len(x.shape)
    others = [a for a in range(len(x.shape)) if a != axis]
    high, low = ops.max(x, axis=others), ops.min(x, axis=others)
    return ops.sum(ops.cast(ops.equal(high, low), "float32"))


def bound_shares(values: Any, bounds: tuple[float, float, float] | None) -> tuple[Any, Any]:
    """The shares of float32 `values` (the statistics' sample) at the lower and the upper
    bound (``(low, high, margin)``, see `BOUNDS`), float32 scalars; NaN without bounds.
    With `OBSERVED` bounds, the lower share is NaN and the upper one is the share exactly at
    the values' maximum (0 if they are all one value). NaN values count as at neither."""
    nan = ops.full((), math.nan, "float32")
    if bounds is None:
        return nan, nan
    count = ops.maximum(ops.cast(ops.size(values), "float32"), 1.0)
    low, high, margin = bounds
    if math.isnan(high):
        top = ops.max(values)
        share = ops.sum(ops.cast(ops.equal(values, top), "float32")) / count
        return nan, ops.where(top > ops.min(values), share, 0.0)
    at_low = ops.sum(ops.cast(values <= low + margin, "float32")) / count
    at_high = ops.sum(ops.cast(values >= high - margin, "float32")) / count
    return at_low, at_high


# -- on the host -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerFacts:
    """What the judge knows of a layer besides its numbers.

    Attributes:
        path: the layer's path.
        activation: its activation's Keras name, or None.
        channels: its channel count (units of a block).
        values_per_channel: how many values each channel has on the probe batch.
        trainable: False for a frozen layer (its findings are info only).
        has_weights: it has trainable weights of its own (a conv, not a pooling layer).
        model_input: it is an input of the model (never judged but for NaN/Inf).
        model_output: it is an output of the model (a confident classifier is not saturated).
    """

    path: str
    activation: str | None
    channels: int
    values_per_channel: int
    trainable: bool = True
    has_weights: bool = False
    model_input: bool = False
    model_output: bool = False

    @property
    def bounds(self) -> tuple[float, float, float]:
        """The bounds its saturation is measured against: its activation's (`BOUNDS`), else
        its observed range (`OBSERVED`)."""
        return BOUNDS.get(self.activation or "", OBSERVED)

    @property
    def judges_saturation(self) -> bool:
        """Whether its saturation is judged: not for the model's inputs (the data's range) or
        outputs (a confident classifier's softmax is near one-hot by design)."""
        return not (self.model_input or self.model_output)


@dataclass(frozen=True)
class Health:
    """One layer's health numbers at one logged epoch (host floats).

    Attributes:
        constant: how many channels are constant on the probe.
        at_low, at_high: the shares of values at the lower and upper bound (NaN: unbounded).
        rms: the RMS of its finite values (NaN if none).
        nonfinite: how many values are NaN/Inf.
        change: its change since the previous logged epoch (NaN at the first).
    """

    constant: int
    at_low: float
    at_high: float
    rms: float
    nonfinite: int
    change: float = math.nan

    def saturation(self, facts: LayerFacts) -> float:
        """The share of values pinned at a bound (NaN: not a bounded layer)."""
        if not facts.judges_saturation or math.isnan(self.at_high):
            return math.nan
        if facts.activation == "softmax":  # rows near one-hot: values >= 0.99, one per row
            return min(1.0, self.at_high * facts.channels)
        if facts.activation in _UPPER_ONLY or facts.bounds is OBSERVED:
            return self.at_high
        return self.at_low + self.at_high

    def scalars(self, facts: LayerFacts) -> dict[str, float]:
        """Its scalars, by tag kind (`tbviz.io.tags.HEALTH_SCALAR_KINDS`)."""
        values = {tags.RMS: self.rms, tags.NONFINITE: float(self.nonfinite)}
        if not facts.model_input:  # an input's constant channels are the data's (a border)
            values[tags.DEAD_CHANNELS] = self.constant / max(facts.channels, 1)
        saturation = self.saturation(facts)
        if not math.isnan(saturation):
            values[tags.SATURATION] = saturation
        return values


class HealthMonitor:
    """Judges every logged epoch of one run's layers; remembers what it needs across epochs.

    Args:
        layers: the layers, in model order (the order "first" and "propagated" refer to).
        samples: probe samples, for the findings' words.
    """

    def __init__(self, layers: Sequence[LayerFacts], samples: int) -> None:
        self.layers = list(layers)
        self.samples = samples
        self._first_rms: dict[str, float] = {}  # layer -> its reference RMS (first nonzero one)
        self._active: dict[tuple[str, str], tags.Finding] = {}  # (layer, kind) -> finding

    def observe(
        self, step: int, numbers: Sequence[Health]
    ) -> tuple[list[list[tags.Finding]], list[tags.Finding]]:
        """The findings at `step`, from each layer's numbers (in the order of `layers`).

        Returns ``(active, onsets)``: the findings that hold at `step`, one list per layer, and
        those among them that begin at `step` (for the onset warning), in model order.
        """
        held: list[dict[str, tuple[float, str]]] = [
            self._conditions(facts, health) for facts, health in zip(self.layers, numbers, strict=True)
        ]
        active: list[list[tags.Finding]] = []
        onsets: list[tags.Finding] = []
        now: dict[tuple[str, str], tags.Finding] = {}
        for index, (facts, conditions) in enumerate(zip(self.layers, held, strict=True)):
            findings = []
            for kind, (value, detail) in conditions.items():
                before = self._active.get((facts.path, kind))
                if before is not None:
                    finding = before  # it goes on: same onset, same figure
                else:
                    origin = self._origin(kind, index, now, held)
                    frozen = not facts.trainable
                    severity = "info" if frozen or origin is not None else "warning"
                    finding = tags.Finding(
                        facts.path,
                        kind,
                        step,
                        severity,
                        value,
                        detail,
                        origin=origin,
                        frozen=frozen,
                    )
                    onsets.append(finding)
                now[(facts.path, kind)] = finding
                findings.append(finding)
            active.append(findings)
        self._active = now
        return active, onsets

    def _origin(
        self,
        kind: str,
        index: int,
        now: dict[tuple[str, str], tags.Finding],
        held: list[dict[str, tuple[float, str]]],
    ) -> str | None:
        """The layer whose finding a new one of `kind` at layer `index` follows, if any (the
        root: the layer that finding itself follows, if it does).

        - After NaN/Inf (a finding from an earlier step), every new finding anywhere follows
          it: training spreads NaN into every weight, and some kernels turn it into 0 (a
          dead layer) rather than pass it on.
        - A stalled layer follows a dead or saturated layer after it in model order: no
          gradient flows back through one.
        - Otherwise, an earlier layer in model order with an active finding of a
          `PROPAGATING` kind at this step (a dead layer's only when all of it is dead), or
          of the same kind if it is one of `SAME_KIND`; never a finding that itself follows
          this layer.
        """
        for (_, held_kind), before in self._active.items():
            if held_kind == tags.NONFINITE_FINDING:
                return before.origin or before.layer
        if kind == tags.STALLED:
            for facts, conditions in zip(self.layers[index + 1 :], held[index + 1 :], strict=True):
                if tags.DEAD in conditions or tags.SATURATED in conditions:
                    return facts.path
        path = self.layers[index].path
        kinds = PROPAGATING + ((kind,) if kind in SAME_KIND else ())
        for facts in self.layers[:index]:
            for cause in kinds:
                finding = now.get((facts.path, cause))
                if finding is None or (cause == tags.DEAD != kind and finding.value < 1.0):
                    continue
                root = finding.origin or finding.layer
                if root != path:
                    return root
        return None

    def _conditions(self, facts: LayerFacts, health: Health) -> dict[str, tuple[float, str]]:
        """The kinds that hold for one layer now: kind -> (figure, words)."""
        held: dict[str, tuple[float, str]] = {}
        probe = f"the probe batch ({self.samples} {'sample' if self.samples == 1 else 'samples'})"
        if health.nonfinite:
            held[tags.NONFINITE_FINDING] = (
                float(health.nonfinite),
                f"{health.nonfinite:,} NaN/Inf values on {probe}",
            )
        if facts.model_input or health.nonfinite:  # a NaN layer is that, not dead or saturated
            return held
        share = health.constant / max(facts.channels, 1)
        if facts.values_per_channel >= MIN_VALUES_PER_CHANNEL and share >= DEAD_SHARE:
            zero = "output 0" if facts.activation in ("relu", "relu6") else "output one value"
            held[tags.DEAD] = (
                share,
                f"{health.constant} of {facts.channels} channels {zero} on every position of {probe}",
            )
        saturation = health.saturation(facts)
        if not math.isnan(saturation) and saturation >= SATURATED_SHARE:
            if facts.bounds is OBSERVED:
                where = "values are exactly at their maximum (a clip)"
            elif facts.activation == "softmax":
                where = "softmax rows are near one-hot (a value >= 0.99)"
            else:
                low, high, _ = facts.bounds
                where = f"{facts.activation} values are at a bound ({low:g} or {high:g})"
            held[tags.SATURATED] = (saturation, f"{saturation:.0%} of its {where} on {probe}")
        if math.isfinite(health.rms):
            first = self._first_rms.get(facts.path)
            if first is None:
                if health.rms > 0:
                    self._first_rms[facts.path] = health.rms
            elif tags.DEAD not in held:
                ratio = health.rms / first
                if ratio >= EXPLODING_RATIO:
                    held[tags.EXPLODING] = (
                        ratio,
                        f"its RMS is {health.rms:.3g}, {ratio:,.0f} times its first logged epoch's ({first:.3g})",
                    )
                elif ratio <= VANISHING_RATIO:
                    held[tags.VANISHING] = (
                        ratio,
                        f"its RMS is {health.rms:.3g}, {ratio:.2g} of its first logged epoch's ({first:.3g})",
                    )
        stuck = facts.trainable and facts.has_weights and health.change <= STALLED_CHANGE
        # (a NaN change compares False.) A dead or saturated layer passes no gradient to its
        # own weights, an exploding one's weights are too large for an update to show (its
        # change after a 1,000-fold jump: 1.1e-6): that is the finding, not `stalled`.
        if stuck and not held.keys() & {tags.DEAD, tags.SATURATED, tags.EXPLODING}:
            held[tags.STALLED] = (
                health.change,
                f"its activations on {probe} did not change since the previous logged epoch "
                f"(change {health.change:.2g}): its weights did not move (zero gradients: a "
                "saturated or dead layer after it, or a learning rate of 0)",
            )
        return held


def onset_message(onsets: Sequence[tags.Finding]) -> list[str]:
    """The onset warnings of one step: one per kind, naming its first layer in model order
    and how many later ones share it; info findings (frozen, propagated) are not warned of."""
    by_kind: dict[str, list[tags.Finding]] = {}
    for finding in onsets:
        by_kind.setdefault(finding.kind, []).append(finding)
    messages = []
    for findings in by_kind.values():
        warned = [f for f in findings if f.severity == "warning"]
        if not warned:
            continue
        first, others = warned[0], len(findings) - 1
        also = f"; {others} later {'layer' if others == 1 else 'layers'} too" if others else ""
        messages.append(f"{first.sentence()}{also}")
    return messages
