"""How fast the ACTIVATIONS tab opens on a big log: 150 layers x 100 epochs x 8 probe images.

    python benchmarks/dashboard.py [--logdir /tmp/tbviz-big] [--browser]

Writes the log once (with tbviz's own writer, `tbviz.io.writer`: palette PNGs of
71 x 71 pixels, an 8 x 8 grid of 8 x 8 maps, smooth patterns that drift from
epoch to epoch, the statistics and the change scalar), then starts TensorBoard
in this process as ``tensorboard --logdir LOGDIR`` would (no sampling flag;
the Python loader, so that TensorBoard's own loading of the same files
competes with the plugin as it does for a user), and times the plugin's
routes: the first ``/runs`` (which reads the whole run), ``/run``, a picture,
and the same again warm. With ``--browser`` instead, headless Chromium opens
the tab on the fresh server (nothing read yet) and the time from navigation
until every grid picture on screen has loaded is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request

import numpy as np

LAYERS, EPOCHS, PROBES = 150, 100, 8
GRID, MAP = 8, 8


def write_log(logdir: str) -> None:
    from tbviz.io.png import palette
    from tbviz.io.summaries import LayerRecord
    from tbviz.io.writer import RunWriter

    colours = palette("viridis")
    writer = RunWriter(logdir)
    rng = np.random.default_rng(0)
    size = GRID * MAP + GRID - 1
    y, x = np.mgrid[0:size, 0:size] / size
    bases = [rng.random(4) * 6 for _ in range(LAYERS)]
    for epoch in range(EPOCHS):
        records = []
        for layer in range(LAYERS):
            a, b, c, d = bases[layer]
            drift = epoch / EPOCHS
            pictures = np.stack([
                (np.sin(a * x + b * y + probe + drift * c) * 0.5 + 0.5) * 253 for probe in range(PROBES)
            ]).astype(np.uint8)  # fmt: skip
            pictures[:, MAP::MAP + 1, :] = 254  # separators
            pictures[:, :, MAP::MAP + 1] = 254
            statistics = {"mean": 0.5, "std": 0.2, "zero_fraction": 0.1}
            if epoch:
                statistics["change"] = float(np.exp(-epoch / (10 + d * 10)) * (1 + layer / LAYERS))
            records.append(LayerRecord(f"block_{layer:03d}/conv", pictures, colours, scalars=statistics))
        writer.write_epoch(epoch, records)
    writer.close()


def get(url: str) -> tuple[float, bytes]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as response:
        body = response.read()
    return time.perf_counter() - start, body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logdir", default="/tmp/tbviz-big")
    parser.add_argument("--browser", action="store_true")
    args = parser.parse_args()
    run_dir = os.path.join(args.logdir, "activations")
    if not os.path.isdir(run_dir):
        start = time.perf_counter()
        write_log(args.logdir)
        print(f"wrote the log in {time.perf_counter() - start:.0f} s")
    size = sum(os.path.getsize(os.path.join(run_dir, f)) for f in os.listdir(run_dir))
    print(f"log: {LAYERS} layers x {EPOCHS} epochs x {PROBES} probes = "
          f"{LAYERS * EPOCHS * PROBES:,} pictures, {size / 1e6:.0f} MB")  # fmt: skip

    from tensorboard import program

    board = program.TensorBoard()
    board.configure(argv=[None, "--logdir", args.logdir, "--port", "0", "--load_fast=false"])
    url = board.launch().rstrip("/") + "/data/plugin/activations"
    if args.browser:  # on a fresh server: nothing read yet
        time_browser(url.rsplit("/data/", 1)[0])
        return
    for label in ("cold", "warm"):
        t_runs, body = get(f"{url}/runs")
        assert json.loads(body)["runs"] == ["activations"], body[:200]
        t_run, body = get(f"{url}/run?run=activations")
        data = json.loads(body)
        layer = data["layers"][-1]["name"]
        t_picture, png = get(f"{url}/picture?run=activations&layer={layer}&step=57&sample=5")
        assert png.startswith(b"\x89PNG")
        print(f"{label}: /runs {t_runs:.2f} s, /run {t_run:.3f} s ({len(body) / 1e3:.0f} kB, "
              f"{len(data['layers'])} layers x {len(data['steps'])} epochs), "
              f"/picture {t_picture * 1e3:.1f} ms")  # fmt: skip
    timings = [get(f"{url}/picture?run=activations&layer=block_{i:03d}/conv&step={i % EPOCHS}&sample=3")[0]
               for i in range(100)]  # fmt: skip
    print(f"100 pictures one after another: median {np.median(timings) * 1e3:.1f} ms each")


def time_browser(base: str) -> None:
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    import tempfile
    from pathlib import Path

    from _browser_support import PAGE, chromium, find_frame

    browser = chromium(Path(tempfile.mkdtemp()))
    try:
        start = time.perf_counter()
        browser.get(base + "/#activations")
        browser.switch_to.frame(find_frame(browser))
        while True:
            page = browser.execute_script(PAGE)
            visible = browser.execute_script(
                "return [...document.querySelectorAll('#grid img')].filter((i) => {"
                " const r = i.getBoundingClientRect(); return r.top < innerHeight && r.bottom > 0; })"
                ".map((i) => i.complete && i.naturalWidth > 0)"
            )
            if page["grid"] and visible and all(visible):
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        print(f"browser: the tab showed its grid ({len(page['grid'])} cells, {len(visible)} on "
              f"screen, all loaded) {elapsed:.2f} s after navigation")  # fmt: skip
    finally:
        browser.quit()


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # TensorBoard's server and loader threads never end on their own
