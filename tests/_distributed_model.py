"""The small CNN the distributed-training workers train (tests/_multiworker_worker.py,
tests/_jax_multiprocess_worker.py): on every backend, created with a fixed seed so that
every process starts from the same weights, and its data."""

import numpy as np

SAMPLES = 32


def data() -> tuple[np.ndarray, np.ndarray]:
    """32 random 16x16 one-channel images and 3-class labels, the same in every process."""
    rng = np.random.default_rng(0)
    x = rng.random((SAMPLES, 16, 16, 1), dtype=np.float32)
    y = rng.integers(0, 3, SAMPLES).astype(np.int32)
    return x, y


def build_model():
    """The small CNN, compiled."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 1)),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv_a"),
            keras.layers.MaxPooling2D(name="pool_a"),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv_b"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(3, activation="softmax", name="head"),
        ],
        name="small_cnn",
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.5),
        loss="sparse_categorical_crossentropy",
    )
    return model
