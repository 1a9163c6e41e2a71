"""A fresh Python process for tests/test_distributed.py: one rank of a torch.distributed group.

    python tests/_torch_distributed_worker.py rank LOG_DIR RESULT_JSON PORT RANK

Two ranks join a gloo process group at ``localhost:PORT`` and each trains the
same small CNN with ActivationLogger on Keras' PyTorch backend for 2 epochs
(Keras does not distribute PyTorch training itself; the group is what a DDP
user has). Writes a JSON file with what the test checks.
"""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "torch"

import numpy as np  # noqa: E402
import torch.distributed  # noqa: E402

log_dir, result_path, port, rank = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
torch.distributed.init_process_group(
    "gloo", init_method=f"tcp://localhost:{port}", rank=rank, world_size=2
)

import keras  # noqa: E402

import tbviz  # noqa: E402

rng = np.random.default_rng(0)
x = rng.random((16, 12, 12, 1), dtype=np.float32)
y = rng.integers(0, 3, 16)
keras.utils.set_random_seed(0)
model = keras.Sequential(
    [
        keras.Input((12, 12, 1)),
        keras.layers.Conv2D(4, 3, name="conv"),
        keras.layers.GlobalAveragePooling2D(name="gap"),
        keras.layers.Dense(3, activation="softmax", name="head"),
    ]
)
model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
logger = tbviz.ActivationLogger(x[:2], log_dir=log_dir, layers=["conv"])
model.fit(x, y, epochs=2, verbose=0, callbacks=[logger])
with open(result_path, "w") as f:
    json.dump({"rank": rank, "active": logger._active, "built": logger._built is not None}, f)
torch.distributed.destroy_process_group()
