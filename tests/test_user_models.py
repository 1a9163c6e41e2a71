"""Models shaped like the well-known public Keras examples, trained for 2 epochs and read back.

Each pins what a user of that kind of model gets by default: augmentation and
preprocessing layers left out, a GAN's generator pictured through `model=`, a
siamese network's shared encoder pictured for each of its calls, the input as
a reference row, and a probe batch that is too large cut with a warning.
"""

import os
import warnings

import keras
import numpy as np
import pytest
from conftest import logging_warnings, pictures_at, read_activations
from test_models import GRAY, assert_monotone, batches_until_refused, fit

from tbviz import ActivationLogger
from tbviz.io import tags
from tbviz.io.summaries import LayerRecord
from tbviz.io.writer import RunWriter
from tbviz.model import selection as layer_selection


def image_paths(result):
    return {tags.parse_tag(tag)[1] for tag in result.images}


def steps_and_samples(result, path):
    return [(s.step, len(s.pngs)) for s in result.images[tags.tag(tags.IMAGE, path)]]


@pytest.fixture
def images16():
    """32 random 16x16 RGB images in 0-255, binary labels."""
    rng = np.random.default_rng(1)
    return rng.random((32, 16, 16, 3), dtype=np.float32) * 255, rng.integers(0, 2, 32)


# -- augmentation and preprocessing ---------------------------------------------------


def augmented_classifier():
    """The shape of Keras' "image classification from scratch": augmentation, rescaling, convs."""
    keras.utils.set_random_seed(0)
    augment = keras.Sequential(
        [keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.1)], name="augment"
    )
    inputs = keras.Input((16, 16, 3))
    x = augment(inputs)
    x = keras.layers.Rescaling(1 / 255, name="rescaling")(x)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(x)
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="head")(x)
    model = keras.Model(inputs, outputs, name="classifier")
    model.compile("adam", "binary_crossentropy")
    return model


def test_default_leaves_out_augmentation_and_preprocessing(tmp_path, images16):
    """RandomFlip/RandomRotation (in a nested Sequential) and Rescaling get no card by default; naming them still works."""
    x, y = images16
    model = augmented_classifier()
    default = ActivationLogger(x[:2], log_dir=tmp_path / "default")
    named = ActivationLogger(
        x[:2], log_dir=tmp_path / "named", layers=["augment/random_flip", "rescaling"], **GRAY
    )
    assert fit(model, x, y, default, named) == []
    assert image_paths(read_activations(tmp_path / "default")) == {"conv1", "pool1", "conv2"}
    result = read_activations(tmp_path / "named")
    assert image_paths(result) == {"augment/random_flip", "rescaling"}
    # At inference the flip is the identity: its picture is the probe image itself.
    for n, picture in enumerate(pictures_at(result, "augment/random_flip", 1)):
        for channel in range(3):  # 3 channels of 16x16: one row of 17-px tiles
            cell = picture[:, channel * 17 : channel * 17 + 16, 0]
            assert_monotone(cell, x[n, :, :, channel], f"sample {n} channel {channel}")


def test_every_keras_preprocessing_layer_is_recognised():
    """Every Random* layer, Rescaling, Normalization, Resizing and CenterCrop is preprocessing; feature layers are not."""
    random_layers = [c for n, c in vars(keras.layers).items() if n.startswith("Random")]
    assert len(random_layers) >= 15  # RandomFlip, RandomRotation, RandomZoom, RandomContrast, ...
    others = [keras.layers.Rescaling, keras.layers.Normalization, keras.layers.Resizing,
              keras.layers.CenterCrop]  # fmt: skip
    for cls in random_layers + others:
        assert issubclass(cls, keras.layers.Layer), cls
        assert layer_selection.is_preprocessing(cls.__new__(cls)), cls.__name__
    for layer in (keras.layers.Conv2D(2, 3), keras.layers.ReLU(), keras.layers.Dense(2),
                  keras.layers.BatchNormalization(), keras.layers.MaxPooling2D()):  # fmt: skip
        assert not layer_selection.is_preprocessing(layer), type(layer).__name__


# -- a GAN: picturing a model other than the one fit() trains ---------------------------

LATENT = 8


class GAN(keras.Model):
    """Keras' DCGAN example in miniature: a wrapper with its own train_step and no call()."""

    def __init__(self):
        super().__init__(name="gan")
        self.generator = keras.Sequential(
            [
                keras.Input((LATENT,)),
                keras.layers.Dense(4 * 4 * 8, name="project"),
                keras.layers.Reshape((4, 4, 8), name="reshape"),
                keras.layers.Conv2DTranspose(8, 4, strides=2, padding="same", name="up"),
                keras.layers.LeakyReLU(0.2, name="up_act"),
                keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid", name="image"),
            ],
            name="generator",
        )
        self.discriminator = keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                keras.layers.Conv2D(8, 3, strides=2, padding="same", name="d_conv"),
                keras.layers.LeakyReLU(0.2),
                keras.layers.GlobalMaxPooling2D(),
                keras.layers.Dense(1),
            ],
            name="discriminator",
        )

    def compile(self):
        super().compile()
        self.d_optimizer = keras.optimizers.Adam(1e-3)
        self.g_optimizer = keras.optimizers.Adam(1e-3)
        self.loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)

    def train_step(self, real):  # TensorFlow's way: the GAN test is tensorflow_only
        import tensorflow as tf

        batch = tf.shape(real)[0]
        noise = keras.random.normal((batch, LATENT), seed=self.seed)
        fake = self.generator(noise)
        with tf.GradientTape() as tape:
            logits = self.discriminator(tf.concat([fake, real], 0))
            labels = tf.concat([tf.ones((batch, 1)), tf.zeros((batch, 1))], 0)
            d_loss = self.loss_fn(labels, logits)
        grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_weights, strict=True))
        with tf.GradientTape() as tape:
            logits = self.discriminator(self.generator(noise))
            g_loss = self.loss_fn(tf.zeros((batch, 1)), logits)
        grads = tape.gradient(g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_weights, strict=True))
        return {"d_loss": d_loss, "g_loss": g_loss}

    @property
    def seed(self):
        if not hasattr(self, "_seed"):
            self._seed = keras.random.SeedGenerator(0)
        return self._seed


@pytest.mark.tensorflow_only
def test_gan_generator_is_pictured_with_model_argument(tmp_path):
    """ActivationLogger(latent, model=gan.generator) on gan.fit(): the generator's layers, on the latent probe."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    real = rng.random((32, 8, 8, 1), dtype=np.float32)
    latent = rng.normal(size=(3, LATENT)).astype(np.float32)
    gan = GAN()
    gan.compile()
    logger = ActivationLogger(latent, log_dir=tmp_path, model=gan.generator, **GRAY)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gan.fit(real, epochs=2, batch_size=8, verbose=0, callbacks=[logger])
    assert logging_warnings(caught) == []
    result = read_activations(tmp_path)
    assert not result.problems
    # The generator's spatial layers (the Reshape is plumbing); nothing of the discriminator.
    assert image_paths(result) == {"up", "up_act", "image"}
    assert steps_and_samples(result, "image") == [(0, 3), (1, 3)]
    # The last picture is the generated image of each latent vector, after training.
    generated = keras.ops.convert_to_numpy(gan.generator(latent))
    for n, picture in enumerate(pictures_at(result, "image", 1)):
        assert picture.shape[:2] == (8, 8)
        assert_monotone(picture[:, :, 0], generated[n, :, :, 0], f"sample {n}")


@pytest.mark.tensorflow_only  # elsewhere Keras' fit() first builds the model, and stops on the missing call()
def test_wrapper_without_call_is_refused_before_training(tmp_path):
    """A GAN wrapper given no model=: a ValueError before the first batch naming its sub-models and model=."""
    gan = GAN()
    gan.compile()
    real = np.zeros((16, 8, 8, 1), np.float32)
    logger = ActivationLogger(real[:2], log_dir=tmp_path)
    batches = []
    counter = keras.callbacks.LambdaCallback(on_train_batch_begin=lambda b, logs: batches.append(b))
    message = (
        r"Model 'gan' \(GAN\) has no `call\(\)`: it trains the models it holds "
        r"\(gan.generator, gan.discriminator\).*Pass the model to picture as `model=`"
    )
    with pytest.raises(ValueError, match=message):
        gan.fit(real, epochs=1, batch_size=8, verbose=0, callbacks=[logger, counter])
    assert batches == []
    assert not os.path.exists(tmp_path / tags.RUN_NAME)


def test_model_argument_must_be_a_keras_model(tmp_path):
    """model= that is not a keras.Model: a TypeError naming what was received."""
    with pytest.raises(TypeError, match=r"`model` must be a keras.Model.*Received: model='gen'"):
        ActivationLogger(np.zeros((2, 4), np.float32), log_dir=tmp_path, model="gen")


# -- a siamese network: a shared encoder called twice ------------------------------------


def siamese():
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
        ],
        name="encoder",
    )
    left, right = keras.Input((12, 12, 1), name="left"), keras.Input((12, 12, 1), name="right")
    distance = keras.layers.Lambda(lambda t: keras.ops.abs(t[0] - t[1]), name="distance")(
        [encoder(left), encoder(right)]
    )
    outputs = keras.layers.Dense(1, activation="sigmoid", name="same")(distance)
    model = keras.Model([left, right], outputs, name="siamese")
    model.compile("adam", "binary_crossentropy")
    return model, encoder


def test_siamese_shared_encoder_is_pictured_for_each_call(tmp_path):
    """The encoder's layers by default, once per call: encoder@0/... on the left probe, encoder@1/... on the right."""
    rng = np.random.default_rng(0)
    x_left, x_right = rng.random((2, 24, 12, 12, 1), dtype=np.float32)
    y = rng.integers(0, 2, 24)
    model, encoder = siamese()
    default = ActivationLogger([x_left[:2], x_right[:2]], log_dir=tmp_path / "default")
    by_plain_path = ActivationLogger(
        [x_left[:2], x_right[:2]], log_dir=tmp_path / "conv", layers="encoder/conv", **GRAY
    )
    assert fit(model, [x_left, x_right], y, default, by_plain_path) == []
    expected = {f"encoder@{call}/{name}" for call in (0, 1) for name in ("conv", "pool")}
    assert image_paths(read_activations(tmp_path / "default")) == expected
    result = read_activations(tmp_path / "conv")
    assert image_paths(result) == {"encoder@0/conv", "encoder@1/conv"}
    # Each call's pictures show the encoder on its own input.
    conv = keras.Model(encoder.inputs[0], encoder.get_layer("conv").output)
    for call, probe in ((0, x_left[:2]), (1, x_right[:2])):
        values = keras.ops.convert_to_numpy(conv(probe))  # (2, 10, 10, 4): a 2x2 grid of 10x10 tiles
        for n, picture in enumerate(pictures_at(result, f"encoder@{call}/conv", 1)):
            for channel in range(4):
                row, col = divmod(channel, 2)
                cell = picture[row * 11 : row * 11 + 10, col * 11 : col * 11 + 10, 0]
                assert_monotone(cell, values[n, :, :, channel], f"call {call} sample {n} ch {channel}")
    # The two calls were given different images, so their pictures differ.
    assert not np.array_equal(
        pictures_at(result, "encoder@0/conv", 1)[0], pictures_at(result, "encoder@1/conv", 1)[0]
    )


# -- the input layer -----------------------------------------------------------------------


def test_input_layer_is_pictured_as_the_probe(tmp_path, images16):
    """Selecting every rank-4 layer, the input included, works: the input's card is the probe as the model sees it, an RGB image (its range stretched to 0..255)."""
    x, y = images16
    x, probe = x / 255, x[:2] / 255
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3), name="image")
    hidden = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    hidden = keras.layers.GlobalAveragePooling2D(name="gap")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(hidden))
    model.compile("adam", "binary_crossentropy")
    rank4 = [layer.name for layer in model.layers if len(layer.output.shape) == 4]
    assert rank4 == ["image", "conv"]
    logger = ActivationLogger(probe, log_dir=tmp_path, layers=rank4, **GRAY)
    assert fit(model, x, y, logger) == []
    result = read_activations(tmp_path)
    assert image_paths(result) == {"image", "conv"}
    assert steps_and_samples(result, "image") == [(0, 2), (1, 2)]
    lo, hi = probe.min(), probe.max()  # one range for the whole image, all samples
    expected = np.floor((probe - lo) / (hi - lo) * 255 + 0.5)
    for n, picture in enumerate(pictures_at(result, "image", 0)):
        assert picture.shape == (16, 16, 3)  # the image itself, not 3 maps side by side
        assert np.abs(picture.astype(float) - expected[n]).max() <= 1, f"sample {n}"
    assert result.info("image").layout == "image" and result.info("image").cmap == "rgb"


def test_input_of_a_nested_model_is_refused_truthfully(tmp_path, images16):
    """The input layer inside a nested model: the error says what it is and what to select instead."""
    x, y = images16
    backbone = keras.Sequential(
        [keras.Input((16, 16, 3), name="backbone_in"), keras.layers.Conv2D(4, 3, name="c")],
        name="backbone",
    )
    inputs = keras.Input((16, 16, 3), name="image")
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(backbone(inputs)))
    model.compile("adam", "mse")
    logger = ActivationLogger(x[:2], log_dir=tmp_path, layers="backbone_in")
    message = (
        r"'backbone_in' is the input layer of a model nested in '.*': its values are the output "
        r"of the layer that feeds that nested model.*can be selected: image\)"
    )
    assert batches_until_refused(model, x, np.zeros((32, 4)), logger, message) == 0


# -- a probe batch that is too large ---------------------------------------------------------


def test_large_probe_is_cut_with_a_warning(tmp_path, images16):
    """x_test passed as the probe: the first max_probes (16) samples are pictured, and a warning says so and how to change it."""
    x, y = images16
    model = augmented_classifier()
    with pytest.warns(UserWarning, match=r"has 32 samples; only the first 16 are pictured.*max_probes=32"):
        capped = ActivationLogger(x, log_dir=tmp_path / "capped", layers="conv1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a deliberate larger probe: no warning
        everything = ActivationLogger(x, log_dir=tmp_path / "all", layers="conv1", max_probes=32)
    assert fit(model, x, y, capped, everything) == []
    assert steps_and_samples(read_activations(tmp_path / "capped"), "conv1") == [(0, 16), (1, 16)]
    assert steps_and_samples(read_activations(tmp_path / "all"), "conv1") == [(0, 32), (1, 32)]
    with pytest.raises(ValueError, match=r"`max_probes` must be a positive integer.*max_probes=0"):
        ActivationLogger(x, log_dir=tmp_path, max_probes=0)


# -- the lost-file warning ---------------------------------------------------------------------


@pytest.mark.backend_independent
def test_lost_event_file_message_names_the_file(tmp_path):
    """When the event file is gone after a write, the error names that file (not None)."""
    writer = RunWriter(str(tmp_path))
    record = LayerRecord("conv", np.zeros((1, 4, 4), np.uint8), np.zeros((256, 3), np.uint8))
    writer.write_epoch(0, [record])
    (path,) = (tmp_path / tags.RUN_NAME).glob("events.out.tfevents.*")
    os.remove(path)
    with pytest.raises(OSError) as error:
        writer.write_epoch(1, [record])
    assert str(error.value).startswith(f"the event file {path} was removed")
    writer.close()
