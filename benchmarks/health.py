"""The measurements behind tbviz's layer-health thresholds (docs/health.md).

    python benchmarks/health.py                   # every model, healthy and broken (~5 min)
    python benchmarks/health.py --backend jax     # on Keras' JAX backend (or torch)
    python benchmarks/health.py --probes 16       # a larger probe batch (default 4)

Trains small models of the shapes tbviz's users bring, each with an
``ActivationLogger(layers="all")``, and reads the logs back: for each model,
over every logged epoch and every layer, the largest share of dead (constant)
channels, the largest saturation, the largest and smallest RMS against the
layer's first logged epoch, and the findings. Healthy models (trained as
they should be): the article's CNN on MNIST, a residual network with batch
normalisation, a frozen backbone with a trained head, a small transformer
encoder and an LSTM. Broken ones: the article's CNN with a fault injected
at the end of epoch 2 (step 1; the learning rate set to 0 at its start for ``stalled``),
one per finding kind. Prints a Markdown table; ``@2``: since epoch 2, as Keras prints it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "tensorflow"))
    parser.add_argument("--probes", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    import keras
    import numpy as np
    from _health_models import BROKEN, HEALTHY, mnist

    import tbviz
    from tbviz.io.reader import read_run
    from tbviz.io.tags import CHANGE, DEAD_CHANNELS, RMS, SATURATION

    keras.utils.set_random_seed(0)
    (x, y), (x_test, _) = mnist(3000)
    print(f"backend {args.backend}, {args.probes} probe samples, {args.epochs} epochs, "
          f"{len(x)} MNIST images\n")
    print("| model | layers | most dead channels | most saturated | RMS ÷ first: max, min | "
          "least change (trainable, with weights) | warnings | info |")
    print("|---|---|---|---|---|---|---|---|")
    cases = [(name, make, None) for name, make in HEALTHY.items()]
    cases += [(f"article CNN, {kind}", BROKEN["article"], kind) for kind in BROKEN["faults"]]
    for name, make, fault in cases:
        keras.utils.set_random_seed(0)
        model, data, callbacks = make(x, y, x_test, fault)
        probe = data[2][: args.probes]
        log_dir = tempfile.mkdtemp(prefix="tbviz-health-")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(
                data[0], data[1], epochs=args.epochs, batch_size=64, verbose=0,
                callbacks=[*callbacks, tbviz.ActivationLogger(probe, log_dir=log_dir, layers="all")],
            )
        run = read_run(os.path.join(log_dir, "activations"))

        # Dead channels are claimed only where a channel has positions (not a Dense layer's
        # units, not the input's border): those layers' shares.
        claimable = {
            layer for layer, infos in run.infos.items()
            if infos[-1][1].layout != "block" and infos[-1][1].layer_class != "InputLayer"
        }
        dead = {k: v for k, v in series(run, DEAD_CHANNELS).items() if k in claimable}
        saturation, rms = series(run, SATURATION), series(run, RMS)
        ratios = [v / s[0] for s in rms.values() if s[0] > 0 for v in s[1:] if np.isfinite(v)]
        # `stalled` is judged on trainable layers with weights of their own.
        learning = {
            layer.name for layer in model._flatten_layers(include_self=False)
            if layer.trainable and layer.trainable_weights
        }
        changes = {k: v for k, v in series(run, CHANGE).items() if k.split("/")[-1] in learning}
        least = min(((k, min(v)) for k, v in changes.items() if v), key=lambda kv: kv[1], default=None)

        judged = run.findings()
        print(f"| {name} | {len(run.infos)} | {top(dead)} | {top(saturation)} | "
              f"{max(ratios, default=float('nan')):.2f}, {min(ratios, default=float('nan')):.3f} | "
              f"{f'{least[1]:.2g} ({least[0]})' if least else '-'} | "
              f"{said(judged, 'warning')} | {said(judged, 'info')} |")


def epoch_number(step: int) -> int:
    from tbviz.io.tags import epoch_number

    return epoch_number(step)


def series(run, kind: str) -> dict[str, list[float]]:
    """Layer -> its values of the scalar `kind`, by step."""
    prefix = f"{kind}/"
    return {t[len(prefix):]: [v for _, v in s] for t, s in run.scalars.items() if t.startswith(prefix)}


def top(values: dict[str, list[float]]) -> str:
    """The largest value of any layer, and that layer."""
    if not values:
        return "-"
    layer, peak = max(((k, max(v)) for k, v in values.items()), key=lambda kv: kv[1])
    return f"{peak:.2f} ({layer})"


def said(judged, severity: str) -> str:
    """The findings of `severity`, in a table cell."""
    return "; ".join(
        f"{j.finding.layer} {j.finding.kind} @{epoch_number(j.finding.since)}"
        for j in judged if j.finding.severity == severity
    ) or "none"


if __name__ == "__main__":
    main()
