"""What a log directory in object storage costs: requests and bytes per logged epoch, and the wait at the end.

    python benchmarks/remote.py                  # ResNet-50, layers="all", 5 epochs
    python benchmarks/remote.py --epochs 10 --backend jax

Trains ``keras.applications.ResNet50(weights=None)`` (224x224, 10 classes, an
epoch of 4 batches of 8 random images) with ``ActivationLogger(8 probes,
layers="all", log_dir="s3://bench/resnet50")`` against moto's S3 API server on
loopback (``moto[server]``), every request counted by a WSGI layer in front of
it. Printed:

- per logged epoch: the object it became (its size) and the requests that
  uploaded it, with the bytes they carried; the volume must not grow with the
  epoch number (an event file appended to on a store without appends, as
  TensorBoard's own ``GFile`` does it, re-uploads everything before it: the
  last column shows what that would have sent, computed from the sizes);
- the requests that were not uploads (the listing ``fit()`` asks once, at the
  first epoch, whether the run holds older epochs);
- how long ``fit()`` waited at its end: from the ``on_train_end`` of a
  callback placed before the logger to ``fit()``'s return (the last epoch's
  pictures encoded and written, as for a local ``log_dir``, then the last
  upload), and the upload part alone (``_Uploads.finish``).

The server runs in this process, on the same 2 cores as training, as a local
MinIO would: times are what the writer waits for a server that answers at
once, not a cloud's. Request counts and bytes do not depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5, help="logged epochs (default: 5)")
    parser.add_argument("--backend", choices=("tensorflow", "jax", "torch"), default=None,
                        help="Keras backend (default: KERAS_BACKEND, else tensorflow)")  # fmt: skip
    args = parser.parse_args()
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend

    requests: list[tuple[str, str, int]] = []  # (method, path, body bytes)
    endpoint = start_server(requests)
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        XDG_CACHE_HOME=tempfile.mkdtemp(prefix="tbviz-remote-bench-"),
    )
    import fsspec
    import keras
    import numpy as np

    import tbviz
    from tbviz.io import writer
    from tbviz.io.reader import event_files, read_run

    fsspec.filesystem("s3").mkdir("bench")
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3), classes=10)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.random((32, 224, 224, 3), dtype=np.float32)
    y = rng.integers(0, 10, 32)
    log_dir = "s3://bench/resnet50"

    class EndClock(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            self.end = time.monotonic()

    clock = EndClock()
    logger = tbviz.ActivationLogger(x[:8], log_dir=log_dir, layers="all")
    finishing: list[float] = []
    finish = writer._Uploads.finish

    def timed_finish(self, timeout: float) -> None:
        start = time.monotonic()
        finish(self, timeout)
        finishing.append(time.monotonic() - start)

    writer._Uploads.finish = timed_finish  # type: ignore[method-assign]
    del requests[:]
    model.fit(x, y, batch_size=8, epochs=args.epochs, verbose=0, callbacks=[clock, logger])
    waited = time.monotonic() - clock.end
    during = requests[:]  # the reading below makes requests of its own

    run = f"{log_dir}/activations"
    result = read_run(run)
    objects = {url.rsplit("/", 1)[1]: url for url in event_files(run)}
    steps: dict[str, set[int]] = {name: set() for name in objects}
    for items in result.images.values():
        for item in items:
            assert item.location is not None
            steps[item.location[0].rsplit("/", 1)[1]].add(item.step)
    sizes = {name: fsspec.filesystem("s3").size(url) for name, url in objects.items()}
    uploads: dict[str, list[tuple[str, int]]] = {name: [] for name in objects}
    others: list[tuple[str, str]] = []
    for method, path, size in during:
        name = path.split("?", 1)[0].rsplit("/", 1)[-1]
        if name in uploads and method in ("PUT", "POST"):
            uploads[name].append((method, size))
        else:
            others.append((method, path))

    layers = len(result.images)
    print(f"ResNet-50, 224x224, 8 probes, layers=\"all\" ({layers} layers pictured), "
          f"{args.epochs} logged epochs, Keras backend {keras.backend.backend()}\n")  # fmt: skip
    print("| epoch | object | requests | bytes sent | an appended file re-uploaded |")
    print("|---|---|---|---|---|")
    appended = 0
    for name in sorted(objects, key=lambda n: sorted(steps[n])):
        appended += sizes[name]
        sent = sum(size for _, size in uploads[name])
        kinds = ", ".join(f"{sum(1 for m, _ in uploads[name] if m == k)} {k}"
                          for k in sorted({m for m, _ in uploads[name]}))  # fmt: skip
        epoch = ", ".join(str(step + 1) for step in sorted(steps[name]))
        print(f"| {epoch} | {sizes[name] / 1e6:.2f} MB | {kinds} | {sent / 1e6:.2f} MB "
              f"| {appended / 1e6:.2f} MB |")  # fmt: skip
    print(f"\nOther requests while training: {len(others)}"
          + (f" ({', '.join(f'{m} {p}' for m, p in others)})" if others else ""))  # fmt: skip
    print(f"fit() waited {waited:.2f} s at its end: the last epoch's pictures encoded and written "
          f"(as for a local log_dir), then {sum(finishing):.2f} s for the last upload.")  # fmt: skip


def start_server(requests: list) -> str:
    """moto's S3 API server on loopback, a port the OS picks, each request recorded; its URL."""
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)

    def counting(environ, start_response):
        length = environ.get("HTTP_X_AMZ_DECODED_CONTENT_LENGTH") or environ.get("CONTENT_LENGTH")
        query = environ.get("QUERY_STRING")
        path = environ["PATH_INFO"] + (f"?{query}" if query else "")
        requests.append((environ["REQUEST_METHOD"], path, int(length or 0)))
        return app(environ, start_response)

    server = make_server("127.0.0.1", 0, counting, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}"


if __name__ == "__main__":
    main()
