"""Watch the article's MNIST CNN learn: feature maps of every conv and pooling layer, every epoch.

    python examples/mnist_activations.py [--log-dir logs/mnist] [--epochs 20]
    tensorboard --logdir logs/mnist --samples_per_plugin images=100000

Offline by default: it trains on the MNIST test split shipped with tbviz
(8,000 digits, 2,000 held out) unless Keras' full MNIST is already cached
(``--source keras`` downloads it). About half a minute on two CPU cores.
"""

import argparse

from tbviz.demo import train

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--log-dir", default="logs/mnist")
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--source", choices=["auto", "shipped", "keras"], default="auto")
args = parser.parse_args()

train(args.log_dir, epochs=args.epochs, source=args.source)
print(f"\nView it:  tensorboard --logdir {args.log_dir} --samples_per_plugin images=100000")
