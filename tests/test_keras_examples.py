"""Models shaped like the public Keras examples, trained for real with default arguments.

Each test is one thing a new user met when trying tbviz on such a model: a
probe Keras accepts and tbviz refused (siamese), a second ``fit()`` that hid
the first one's pictures (fine-tuning, autoencoder), sequence layers that
ignored ``max_channels`` (text), a vision transformer's tokens drawn as a
stripe pattern, colour images drawn as three maps (a generator, the input),
and a ReLU of a ReLU taking two of the default places.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
from conftest import logging_warnings, pictures_at, read_activations

from tbviz import ActivationLogger
from tbviz.io import tags


def fit(model, x, y, *callbacks, epochs=2, **options):
    """``model.fit`` for a couple of epochs; returns tbviz's warnings about its logging."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, epochs=epochs, batch_size=8, verbose=0, callbacks=list(callbacks), **options)
    return logging_warnings(caught)


def image_layers(result) -> list[str]:
    return sorted(t.split("/", 1)[1] for t in result.images)


# -- siamese: Keras adjusts the probe's rank, so tbviz does --------------------------------


def siamese_network():
    """keras-io's siamese contrastive example in miniature: a shared tower on two 28x28 inputs."""
    keras.utils.set_random_seed(0)
    tower = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(4, 5, activation="tanh", name="conv"),
            keras.layers.AveragePooling2D(4, name="pool"),
            keras.layers.Flatten(),
            keras.layers.Dense(8, activation="tanh", name="embedding"),
        ],
        name="tower",
    )
    left, right = keras.Input((28, 28, 1), name="left"), keras.Input((28, 28, 1), name="right")
    distance = keras.layers.Lambda(
        lambda pair: keras.ops.sqrt(
            keras.ops.maximum(keras.ops.sum(keras.ops.square(pair[0] - pair[1]), 1, keepdims=True), 1e-7)
        ),
        name="distance",
    )([tower(left), tower(right)])
    model = keras.Model([left, right], keras.layers.Dense(1, activation="sigmoid")(distance))
    model.compile("adam", "binary_crossentropy")
    return model


def test_siamese_probe_without_the_channel_axis_is_accepted(tmp_path):
    """(N, 28, 28) pairs feed Input((28, 28, 1)) in Keras (as in keras-io's siamese example): tbviz takes them too."""
    rng = np.random.default_rng(0)
    pairs = [rng.random((16, 28, 28), dtype=np.float32) for _ in range(2)]
    model = siamese_network()
    logger = ActivationLogger([p[:2] for p in pairs], log_dir=tmp_path)
    assert fit(model, pairs, rng.integers(0, 2, 16).astype("float32"), logger) == []
    result = read_activations(tmp_path)
    assert image_layers(result) == ["tower@0/conv", "tower@0/pool", "tower@1/conv", "tower@1/pool"]
    assert [s.step for s in result.images["feature_maps/tower@1/conv"]] == [0, 1]
    inputs = ActivationLogger([p[:2] for p in pairs], log_dir=tmp_path / "inputs", layers=["left", "right"])
    assert fit(model, pairs, rng.integers(0, 2, 16).astype("float32"), inputs) == []
    (picture,) = pictures_at(read_activations(tmp_path / "inputs"), "left", 1)[:1]
    assert picture.shape == (28, 28, 3)  # the 28x28 digit itself, grey


def test_a_probe_that_does_not_fit_names_the_input_by_its_layer(tmp_path):
    """A probe Keras would refuse is refused before training, naming the input as the user named it."""
    model = siamese_network()
    wrong = [np.zeros((2, 20, 20), np.float32)] * 2
    with pytest.raises(ValueError) as error:
        model.fit([np.zeros((8, 28, 28), np.float32)] * 2, np.zeros(8), epochs=1, verbose=0,
                  callbacks=[ActivationLogger(wrong, log_dir=tmp_path)])  # fmt: skip
    assert str(error.value) == (
        "`probe_images`[0] does not match the model's input 'left': expected shape "
        "(N, 28, 28, 1), received shape (2, 20, 20)."
    )


# -- two fit() calls: nothing logged is hidden --------------------------------------------


def conv_autoencoder():
    """keras-io's convolutional denoising autoencoder in miniature: its output is an image."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu", padding="same", name="enc")(inputs)
    x = keras.layers.MaxPooling2D(2, padding="same", name="down")(x)
    x = keras.layers.Conv2DTranspose(8, 3, strides=2, activation="relu", padding="same", name="up")(x)
    outputs = keras.layers.Conv2D(1, 3, activation="sigmoid", padding="same", name="decoded")(x)
    model = keras.Model(inputs, outputs, name="autoencoder")
    model.compile("adam", "binary_crossentropy")
    return model


def test_a_second_fit_from_epoch_0_goes_on_after_the_first(tmp_path):
    """fit() twice without initial_epoch (fine-tuning, keras-io's autoencoder): the second's epochs follow the first's, with one warning saying so."""
    x = np.random.default_rng(1).random((16, 16, 16, 1), dtype=np.float32)
    model = conv_autoencoder()
    logger = ActivationLogger(x[:2], log_dir=tmp_path)
    assert fit(model, x, x, logger) == []
    said = fit(model, x, x, logger)  # Keras starts again at epoch 0
    assert len(said) == 1 and "starts again at epoch 0" in said[0], said
    assert "logged as steps 2, 3" in said[0] and "initial_epoch=2" in said[0]
    result = read_activations(tmp_path)
    for layer in ("enc", "down", "up", "decoded"):
        assert [s.step for s in result.images[f"feature_maps/{layer}"]] == [0, 1, 2, 3], layer
    changes = dict(result.scalars["change/enc"])
    assert sorted(changes) == [1, 2, 3]  # step 2 compares with step 1, the first fit's last
    # A new logger on the same log_dir in this process goes on too.
    again = fit(model, x, x, ActivationLogger(x[:2], log_dir=tmp_path, layers="enc"))
    assert len(again) == 1 and "logged as steps 4, 5" in again[0]
    assert [s.step for s in read_activations(tmp_path).images["feature_maps/enc"]] == list(range(6))


def test_the_output_image_is_drawn_as_an_image(tmp_path):
    """The autoencoder's sigmoid output is its one-channel image, in grey on its [0, 1] scale."""
    x = np.random.default_rng(2).random((16, 16, 16, 1), dtype=np.float32)
    model = conv_autoencoder()
    assert fit(model, x, x, ActivationLogger(x[:2], log_dir=tmp_path)) == []
    result = read_activations(tmp_path)
    info = result.info("decoded")
    assert (info.layout, info.cmap, info.normalize) == ("image", "gray", "fixed")
    decoded = keras.ops.convert_to_numpy(model(x[:2]))[..., 0]
    for n, picture in enumerate(pictures_at(result, "decoded", 1)):
        assert picture.shape == (16, 16, 3)
        grey = np.floor(decoded[n] * (tags.LEVELS - 1) + 0.5) * 255 / (tags.LEVELS - 1)
        assert np.abs(picture[..., 0] - grey).max() <= 1.5, n


# -- sequences: max_channels holds ---------------------------------------------------------


def test_sequence_layers_show_the_first_max_channels_channels(tmp_path):
    """keras-io's text classifier (Embedding(128) -> Conv1D(128), any length): strips of 64 channels, as every card says."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None,), dtype="int64")  # a sequence of any length
    x = keras.layers.Embedding(500, 128, name="embedding")(inputs)
    x = keras.layers.Conv1D(128, 5, activation="relu", name="conv1d")(x)
    x = keras.layers.GlobalMaxPooling1D()(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    model.compile("adam", "binary_crossentropy")
    tokens = np.random.default_rng(3).integers(0, 500, (16, 40))
    assert fit(model, tokens, np.ones(16), ActivationLogger(tokens[:2], log_dir=tmp_path)) == []
    result = read_activations(tmp_path)
    assert image_layers(result) == ["conv1d", "embedding"]
    for layer, length in (("embedding", 40), ("conv1d", 36)):
        info = result.info(layer)
        assert (info.layout, info.channels, info.channels_shown) == ("strip", 128, 64)
        assert info.output_shape == (length, 128)  # the size on the probe: the graph has None
        (item,) = result.images[f"feature_maps/{layer}"][:1]
        assert (item.height, item.width) == (64, length)  # 64 channels down, time across
        assert "the first 64 of 128 channels" in result.descriptions[f"feature_maps/{layer}"]


# -- a vision transformer's tokens ---------------------------------------------------------


class ClassToken(keras.layers.Layer):
    """Prepends a learned class token to the patch tokens (as ViTs do)."""

    def build(self, input_shape):
        self.token = self.add_weight(shape=(1, 1, input_shape[-1]), initializer="zeros", name="cls")

    def call(self, patches):
        batch = keras.ops.shape(patches)[0]
        token = keras.ops.broadcast_to(self.token, (batch, 1, patches.shape[-1]))
        return keras.ops.concatenate([token, patches], axis=1)


def tiny_vit(class_token: bool):
    """keras-io's ViT in miniature: 4x4 patches of a 16x16 image, projected, one attention block."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    patches = keras.layers.Conv2D(16, 4, strides=4, name="patchify")(inputs)
    tokens = keras.layers.Reshape((16, 16), name="patches")(patches)
    tokens = keras.layers.Dense(16, name="projection")(tokens)
    if class_token:
        tokens = ClassToken(name="class_token")(tokens)
    normed = keras.layers.LayerNormalization(name="norm")(tokens)
    attended = keras.layers.MultiHeadAttention(2, 8, name="attention")(normed, normed)
    tokens = keras.layers.Add(name="residual")([tokens, attended])
    pooled = keras.layers.GlobalAveragePooling1D()(tokens)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(pooled))
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


@pytest.mark.parametrize("class_token", [False, True])
def test_vit_tokens_are_maps_over_the_patch_grid(tmp_path, class_token):
    """A ViT's 16 patch tokens (17 with a class token, dropped) are each channel's map over the 4x4 patch grid."""
    images = np.random.default_rng(4).random((16, 16, 16, 3), dtype=np.float32)
    model = tiny_vit(class_token)
    logger = ActivationLogger(images[:2], log_dir=tmp_path, layers=["projection", "residual"])
    assert fit(model, images, np.arange(16) % 3, logger) == []
    result = read_activations(tmp_path)
    for layer in ("projection", "residual"):
        info = result.info(layer)
        assert (info.layout, info.grid, info.cell) == ("tokens", (4, 4), (4, 4)), layer
        item = result.images[f"feature_maps/{layer}"][0]
        assert (item.height, item.width) == (4 * 4 + 3, 4 * 4 + 3)  # 16 maps of 4x4, separators
    # The maps are the tokens in patch order: the projection's channel 0 over the grid.
    projection = keras.Model(model.input, model.get_layer("projection").output)
    channel = keras.ops.convert_to_numpy(projection(images[:2]))[0, :, 0].reshape(4, 4)
    picture = pictures_at(result, "projection", 1)[0][:4, :4, :]
    order = np.argsort(channel, axis=None)
    brightness = picture.astype(float).sum(axis=2).ravel()[order]
    assert (np.diff(brightness) >= -1e-6).all() or (np.diff(brightness) <= 1e-6).all()


# -- a generator's colour images -----------------------------------------------------------


def test_a_generator_output_is_an_rgb_image_on_its_tanh_scale(tmp_path):
    """A DCGAN-style generator's tanh output of 3 channels is drawn as the colour image, [-1, 1] to 0..255."""
    keras.utils.set_random_seed(0)
    generator = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(4 * 4 * 16, name="project"),
            keras.layers.Reshape((4, 4, 16)),
            keras.layers.Conv2DTranspose(8, 4, strides=2, padding="same", name="up"),
            keras.layers.LeakyReLU(0.2, name="up_act"),
            keras.layers.Conv2D(3, 3, padding="same", activation="tanh", name="image"),
        ],
        name="generator",
    )
    generator.compile("adam", "mse")
    rng = np.random.default_rng(5)
    latent = rng.normal(size=(16, 8)).astype("float32")
    targets = rng.uniform(-1, 1, (16, 8, 8, 3)).astype("float32")
    assert fit(generator, latent, targets, ActivationLogger(latent[:3], log_dir=tmp_path)) == []
    result = read_activations(tmp_path)
    assert image_layers(result) == ["image", "up", "up_act"]
    info = result.info("image")
    assert (info.layout, info.cmap, info.normalize, info.grid) == ("image", "rgb", "fixed", (1, 1))
    generated = keras.ops.convert_to_numpy(generator(latent[:3]))
    for n, picture in enumerate(pictures_at(result, "image", 1)):
        expected = np.floor((generated[n] + 1) / 2 * 255 + 0.5)
        assert picture.shape == (8, 8, 3)
        assert np.abs(picture - expected).max() <= 1, n


# -- a ReLU of a ReLU ----------------------------------------------------------------------


def test_a_relu_of_a_relu_takes_no_place(tmp_path):
    """ReLU() after Conv2D(activation="relu") repeats its input: left out by default and by "all", pictured when named."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((12, 12, 1), name="image"),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
            keras.layers.ReLU(name="relu"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Conv2D(4, 3, name="linear"),
            keras.layers.ReLU(name="relu_b"),  # a ReLU of a linear conv: kept
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="softmax", name="head"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.default_rng(6).random((16, 12, 12, 1), dtype=np.float32)
    loggers = {
        name: ActivationLogger(x[:2], log_dir=tmp_path / name, layers=layers)
        for name, layers in (("default", None), ("all", "all"), ("named", "relu"))
    }
    assert fit(model, x, np.arange(16) % 3, *loggers.values()) == []
    assert image_layers(read_activations(tmp_path / "default")) == ["conv", "linear", "pool", "relu_b"]
    assert image_layers(read_activations(tmp_path / "all")) == [
        "conv", "head", "image", "linear", "pool", "relu_b",
    ]  # fmt: skip
    assert image_layers(read_activations(tmp_path / "named")) == ["relu"]
