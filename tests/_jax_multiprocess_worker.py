"""A fresh Python process for tests/test_distributed.py: Keras on JAX, trained with ActivationLogger.

    python tests/_jax_multiprocess_worker.py MODE LOG_DIR RESULT_JSON [PORT PROCESS_ID]

MODE:
    single      one process, no distribution: the reference.
    process     one of two processes of a ``keras.distribution.DataParallel`` run on
                JAX's CPU: ``keras.distribution.initialize`` joins the processes
                through the coordinator at ``localhost:PORT`` (started by process
                0), each process holds one CPU device, and the weights are
                replicated on both. Cross-process collectives on CPU use gloo.
    sharded     the same two processes under ``keras.distribution.ModelParallel``,
                ``conv_a``'s kernel split across them (each process feeds the whole
                global batch: the mesh's batch axis has size 1).

Each process feeds its own half of every global batch (``auto_shard_dataset=False``:
Keras shards only a ``tf.data.Dataset`` itself), so both modes see the same 8
samples in every step, and train the same model (same seed, same initial
weights) on the same data, unshuffled, for 2 epochs. Writes a JSON file with
what the tests check. KERAS_BACKEND must be ``jax`` (set by the caller).
"""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
from _distributed_model import SAMPLES, build_model, data

GLOBAL_BATCH = 8
PROCESSES = 2
EPOCHS = 2
PROBES = 3
LAYERS = ["conv_a", "pool_a", "conv_b", "gap"]


def local_half(array: np.ndarray, process_id: int) -> np.ndarray:
    """This process's half of every global batch, in order."""
    share = GLOBAL_BATCH // PROCESSES
    batches = array.reshape(SAMPLES // GLOBAL_BATCH, GLOBAL_BATCH, *array.shape[1:])
    mine = batches[:, process_id * share : (process_id + 1) * share]
    return mine.reshape(-1, *array.shape[1:])


def main() -> None:
    mode, log_dir, result_path = sys.argv[1:4]
    import jax

    if mode in ("process", "sharded"):
        port, process_id = int(sys.argv[4]), int(sys.argv[5])
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    import keras

    import tbviz

    if keras.backend.backend() != "jax":
        raise SystemExit(f"KERAS_BACKEND must be jax; got {keras.backend.backend()!r}")
    x, y = data()
    batch = GLOBAL_BATCH
    if mode == "process":
        keras.distribution.initialize(f"localhost:{port}", PROCESSES, process_id)
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(auto_shard_dataset=False)
        )
        x, y, batch = local_half(x, process_id), local_half(y, process_id), batch // PROCESSES
    elif mode == "sharded":
        keras.distribution.initialize(f"localhost:{port}", PROCESSES, process_id)
        mesh = keras.distribution.DeviceMesh((1, PROCESSES), ["batch", "model"], jax.devices())
        layouts = keras.distribution.LayoutMap(mesh)
        layouts[".*/conv_a/kernel"] = (None, None, None, "model")
        keras.distribution.set_distribution(
            keras.distribution.ModelParallel(layout_map=layouts, auto_shard_dataset=False)
        )
    elif mode != "single":
        raise SystemExit(f"unknown mode {mode!r}")
    model = build_model()
    # Grey: each pixel reads back as its colour level (tests/test_distributed.py).
    probe = data()[0][:PROBES]
    logger = tbviz.ActivationLogger(probe, log_dir=log_dir, layers=LAYERS, cmap="gray")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(
            x, y, batch_size=batch, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=[logger]
        )
    result = {
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "devices": len(jax.devices()),
        "active": bool(logger._active),
        "built": logger._built is not None,
        "loss": [float(v) for v in history.history["loss"]],
        # tbviz's warnings about logging; not layer-health findings on this untrained model
        "warnings": [
            str(w.message) for w in caught
            if issubclass(w.category, tbviz.TbvizWarning)
            and not issubclass(w.category, tbviz.LayerHealthWarning)
        ],
    }
    with open(result_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
