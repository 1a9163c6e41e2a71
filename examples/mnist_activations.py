"""Watch the article's MNIST CNN learn: every conv and pooling layer's feature maps, every epoch.

    python examples/mnist_activations.py            # about half a minute on two CPU cores
    tensorboard --logdir logs/mnist                 # then open the ACTIVATIONS tab

The whole training script, to read and copy: the article's model, MNIST, and
``fit`` with tbviz's `ActivationLogger` beside Keras' own ``TensorBoard``
callback. Offline: it trains on the MNIST test split shipped with tbviz
(8,000 digits to train, 2,000 to validate). Keras' ``TensorBoard`` callback
needs TensorFlow installed (on any Keras backend); without it, drop that line:
the pictures never need TensorFlow.
"""

import keras
import numpy as np

from tbviz import ActivationLogger
from tbviz.data import load_mnist

LOG_DIR = "logs/mnist"

# MNIST as float32 images (n, 28, 28, 1) in [0, 1] and their labels.
(x_train, y_train), (x_test, y_test), _ = load_mnist("shipped")

# The article's CNN: two 2x2 convolutions of 32 filters, each followed by 2x2 max-pooling,
# a 500-unit sigmoid layer and a 10-way softmax.
keras.utils.set_random_seed(0)
model = keras.Sequential(
    [
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(32, (2, 2), activation="relu", name="conv1"),
        keras.layers.MaxPooling2D((2, 2), name="pool1"),
        keras.layers.Conv2D(32, (2, 2), activation="relu", name="conv2"),
        keras.layers.MaxPooling2D((2, 2), name="pool2"),
        keras.layers.Flatten(),
        keras.layers.Dense(500, activation="sigmoid", name="dense"),
        keras.layers.Dense(10, activation="softmax", name="softmax"),
    ]
)
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])

# The probe: a fixed batch, pictured at the end of every epoch. One image of each of the
# digits 0 to 3, the same every run.
probe = np.stack([x_test[np.flatnonzero(y_test == digit)[0]] for digit in range(4)])

model.fit(
    x_train,
    y_train,
    epochs=20,
    batch_size=1000,
    validation_data=(x_test, y_test),
    callbacks=[
        keras.callbacks.TensorBoard(log_dir=LOG_DIR),  # losses and accuracy, as usual
        ActivationLogger(probe, log_dir=LOG_DIR),  # + the feature maps of every epoch
    ],
)
print(f"\nView it: tensorboard --logdir {LOG_DIR}   (the ACTIVATIONS tab)")
