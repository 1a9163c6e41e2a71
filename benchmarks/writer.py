"""How long tbviz's writer takes for one logged epoch, on the writer thread.

    python benchmarks/writer.py [--epochs 7] [--dir /tmp/tbviz-writer-bench]

Two epochs of realistic size, each written with `tbviz.io.writer.RunWriter`
(``write_epoch``, as the logger's writer thread does: encoding on a few threads, then flush):

- *12 x 256²*: the default selection of a big model: 12 layers, 8 probe
  pictures of 256 x 256 each;
- *174 x 64²*: every image-like layer of ResNet-50: 174 layers, 8 pictures of
  64 x 64 each (many small records).

Pictures are smooth patterns with a little noise (feature maps compress
better than noise), statistics and a 30-bin histogram per layer. Printed per
case: the first epoch (creating the event file included) and the median of
the next ones, for the whole epoch and for its PNG encoding alone (the same
pictures encoded by ``encode_palette_png``); their difference is what the
summaries and the event file cost. Run it from two checkouts alternately
(``PYTHONPATH=... python benchmarks/writer.py``) to compare writers under the
same load.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

import numpy as np

CASES = {"12 x 256²": (12, 256), "174 x 64²": (174, 64)}
PROBES = 8


def pictures(layers: int, size: int) -> list[np.ndarray]:
    """Per layer, ``(PROBES, size, size)`` uint8 palette indices: smooth waves plus noise."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    result = []
    for layer in range(layers):
        phase = rng.uniform(0, 6.3, (PROBES, 1, 1))
        waves = np.sin(6 * x + phase + layer) * np.cos(4 * y - phase)
        noisy = waves + rng.normal(0, 0.05, (PROBES, size, size))
        result.append(np.clip((noisy + 1) * 126.5, 0, 253).astype(np.uint8))
    return result


def time_case(layers: int, size: int, epochs: int, directory: str) -> dict[str, float]:
    from tbviz.io.png import encode_palette_png
    from tbviz.io.summaries import LayerRecord
    from tbviz.io.writer import RunWriter

    data = pictures(layers, size)
    palette = np.random.default_rng(1).integers(0, 256, (256, 3), np.uint8)
    stats = {"mean": np.float32(0.5), "std": np.float32(0.25), "zero_fraction": np.float32(0.1)}
    histogram = np.random.default_rng(2).random((30, 3))
    writer = RunWriter(directory)
    totals, encodings = [], []
    for epoch in range(epochs):
        start = time.perf_counter()
        records = [
            LayerRecord(f"layer_{layer:03d}", maps, palette, scalars=stats, histogram=histogram)
            for layer, maps in enumerate(data)
        ]
        writer.write_epoch(epoch, records)
        totals.append(time.perf_counter() - start)
        start = time.perf_counter()
        for maps in data:
            for picture in maps:
                encode_palette_png(picture, palette)
        encodings.append(time.perf_counter() - start)
    writer.close()
    run = os.path.join(directory, "activations")
    size_bytes = sum(os.path.getsize(os.path.join(run, f)) for f in os.listdir(run))
    return {
        "first": totals[0],
        "epoch": statistics.median(totals[1:]),
        "encoding": statistics.median(encodings[1:]),
        "MB / epoch": size_bytes / epochs / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=7)
    parser.add_argument("--dir", default=None, help="where to write (a temp dir by default)")
    args = parser.parse_args()
    import tbviz.io.writer

    print(f"# {tbviz.io.writer.__file__}")
    print("| case | first epoch (s) | epoch (s) | PNG encoding (s) | rest (s) | MB / epoch |")
    print("|---|---|---|---|---|---|")
    for name, (layers, size) in CASES.items():
        directory = tempfile.mkdtemp(dir=args.dir)
        try:
            r = time_case(layers, size, args.epochs, directory)
        finally:
            shutil.rmtree(directory)
        print(
            f"| {name} | {r['first']:.3f} | {r['epoch']:.3f} | {r['encoding']:.3f} "
            f"| {r['epoch'] - r['encoding']:.3f} | {r['MB / epoch']:.1f} |"
        )


if __name__ == "__main__":
    main()
