"""Makes the README's example pictures of each output rank: docs/rank2.png ... docs/rank5.png.

    python docs/make_rank_examples.py [--out docs]

Each picture is real logger output: a small model trains for 2 epochs with
`tbviz.ActivationLogger` (default options: viridis, one contrast per map),
the first probe sample's picture of the last epoch is read back from the event
file with `tbviz.reader.read_run`, decoded, and enlarged with nearest-neighbour
so that single activations stay crisp squares. Offline, about half a minute on
two CPU cores.

- rank 2 ``(N, units)``: the article CNN's 500-unit Dense layer on an MNIST
  digit, a 20 x 25 block of unit intensities;
- rank 3 ``(N, T, C)``: an LSTM with ``return_sequences`` on a noisy chirp,
  a heat strip with channels down and time across;
- rank 4 ``(N, H, W, C)``: the article CNN's first convolution on the digit,
  its 32 maps in a 4 x 8 grid;
- rank 5 ``(N, D, H, W, C)``: a Conv3D on a short clip of a moving dot, one
  row per channel, one column per frame (depth slice).
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from tbviz import ActivationLogger  # noqa: E402
from tbviz.cli.demo import article_model, probe_digits  # noqa: E402
from tbviz.data import load_mnist  # noqa: E402
from tbviz.io import tags  # noqa: E402
from tbviz.io.reader import decode_png, read_run  # noqa: E402

TARGET = 450  # the enlarged picture's longer side is at most this many pixels


def logged_picture(model, x, y, probe, layer: str, **fit_args) -> np.ndarray:
    """Trains `model` 2 epochs with the logger on `layer`; the first probe's last picture, decoded."""
    with tempfile.TemporaryDirectory() as log_dir:
        logger = ActivationLogger(probe, log_dir=log_dir, layers=[layer])
        model.fit(x, y, epochs=2, verbose=0, callbacks=[logger], **fit_args)
        steps = read_run(os.path.join(log_dir, tags.RUN_NAME)).images[
            tags.tag(tags.IMAGE, layer)
        ]
        return decode_png(steps[-1].pngs[0])


def enlarge(picture: np.ndarray) -> Image.Image:
    """Nearest-neighbour enlargement by the largest whole factor that fits in TARGET."""
    height, width = picture.shape[:2]
    factor = max(1, TARGET // max(height, width))
    return Image.fromarray(picture).resize((width * factor, height * factor), Image.NEAREST)


def mnist_pictures() -> dict[str, np.ndarray]:
    """Rank 4 (conv1) and rank 2 (dense) from the article's CNN on MNIST."""
    (x_train, y_train), (x_test, y_test), _ = load_mnist("shipped")
    keras.utils.set_random_seed(0)
    model = article_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    probe = probe_digits(x_test, y_test, count=1)
    with tempfile.TemporaryDirectory() as log_dir:
        logger = ActivationLogger(probe, log_dir=log_dir, layers=["conv1", "dense"])
        model.fit(x_train, y_train, epochs=2, batch_size=250, verbose=0, callbacks=[logger])
        result = read_run(os.path.join(log_dir, tags.RUN_NAME))
    last = {
        layer: decode_png(result.images[tags.tag(tags.IMAGE, layer)][-1].pngs[0])
        for layer in ("conv1", "dense")
    }
    return {"rank4": last["conv1"], "rank2": last["dense"]}


def sequence_picture() -> np.ndarray:
    """Rank 3: an LSTM's sequence output on a noisy chirp."""
    rng = np.random.default_rng(0)
    t = np.linspace(0.0, 1.0, 64, dtype=np.float32)
    rates = rng.uniform(2.0, 8.0, (256, 1)).astype(np.float32)
    x = np.sin(2 * np.pi * rates * t * (1 + t))[..., np.newaxis] + rng.normal(0, 0.1, (256, 64, 1))
    y = (rates[:, 0] > 5.0).astype(np.int32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64, 1)),
            keras.layers.Conv1D(16, 5, padding="same", activation="relu", name="conv1d"),
            keras.layers.LSTM(16, return_sequences=True, name="lstm"),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    return logged_picture(
        model, x.astype(np.float32), y, x[:1].astype(np.float32), "lstm", batch_size=32
    )


def clip_picture() -> np.ndarray:
    """Rank 5: a Conv3D on 8-frame clips of a dot moving left or right."""
    rng = np.random.default_rng(0)
    clips = np.zeros((128, 8, 16, 16, 1), np.float32)
    labels = rng.integers(0, 2, 128).astype(np.int32)
    rows, cols = np.mgrid[0:16, 0:16]
    for i, label in enumerate(labels):
        row = rng.uniform(4, 12)
        for frame in range(8):
            col = 2 + frame * 1.5 if label else 13 - frame * 1.5
            clips[i, frame, :, :, 0] = np.exp(-((rows - row) ** 2 + (cols - col) ** 2) / 4.0)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 16, 16, 1)),
            keras.layers.Conv3D(4, 3, padding="same", activation="relu", name="conv3d"),
            keras.layers.GlobalAveragePooling3D(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    return logged_picture(model, clips, labels, clips[:1], "conv3d", batch_size=32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = parser.parse_args()
    pictures = {**mnist_pictures(), "rank3": sequence_picture(), "rank5": clip_picture()}
    for name in ("rank2", "rank3", "rank4", "rank5"):
        path = os.path.join(args.out, f"{name}.png")
        image = enlarge(pictures[name])
        image.save(path, optimize=True)
        print(
            f"{path}: {pictures[name].shape[1]}x{pictures[name].shape[0]} -> {image.width}x{image.height}"
        )


if __name__ == "__main__":
    main()
