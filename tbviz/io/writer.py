"""Writes TensorBoard event files, without TensorFlow, on every Keras backend.

An event file is a sequence of TFRecords (`tbviz.io.records`), each an
``Event`` proto: first ``Event(file_version="brain.Event:2")``, then one
``Event(wall_time, step, summary)`` per `EventFileWriter.write_summary`.
Files are named as TensorFlow 2 names its own,
``events.out.tfevents.<seconds>.<host>.<pid>.<counter>.v2``, so that
TensorBoard orders them the same way.

A local run directory gets one file per writer session, appended to and
synced at each flush. A run directory given as a URL (`tbviz.io.fs`) is on an
object store, which cannot append: each flush there makes what was written
since the last one a new, complete event file, named when it is made, and
`_Uploads` sends these objects in the background, in name order, one request
each, never rewriting one (see docs/remote.md).

`RunWriter` writes the logged epochs of one tbviz run in the background,
each flushed before the next one starts.
"""

from __future__ import annotations

import io
import itertools
import os
import socket
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from tensorboard.compat.proto import event_pb2

from tbviz.io import fs, tags
from tbviz.io.records import frame
from tbviz.io.summaries import LayerRecord, layer_summary

# Unique file names within this process, even for several files in the same second.
_counter = itertools.count()

# Field 5 (``summary``) of ``Event``, length-delimited: protobuf's wire tag for it.
_SUMMARY_TAG = b"\x2a"


class EventFileWriter:
    """Writes summaries to event files in one run directory, created on first write.

    Locally each record goes straight to the operating system: a crash of the
    process loses nothing written, and a running TensorBoard sees it at once.
    `flush` also syncs the file to the disk (as TensorFlow's writer does) and
    checks that the file is still the one at its path. After a failed write
    or sync, what was written since the last good `flush` is cut off the
    file, which stays valid and is written on. A file removed under the
    writer is reported by the next `flush`, and the next write starts a new
    file.

    For a URL, records wait in memory until `flush`, which makes them one new
    event file and hands it to the background uploads (`_Uploads`): `flush`
    never waits for the network, and upload failures are not raised but
    reported by `notices`. `close` waits for the uploads, a bounded time
    (`upload_wait_seconds`).

    Failures raise `OSError` naming the file. Not thread-safe.

    Args:
        run_dir: the directory of the run (a local path or a URL), created when needed.
    """

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        self.path: str | None = None  # the local event file being written, once created
        self._file: io.FileIO | None = None
        self._size = 0  # bytes written to it
        self._flushed = 0  # its size at the last good flush
        self._remote = fs.is_url(run_dir)
        self._pending = bytearray()  # a URL's records since the last flush
        self._pending_steps: set[int] = set()  # and their steps
        self._uploads = _uploads_of(run_dir) if self._remote else None
        self._second = 0  # the time in the name of the last object made for the URL

    def write_summary(self, step: int, summary: bytes, *, wall_time: float | None = None) -> None:
        """Writes ``Event(wall_time, step, summary)``.

        Args:
            step: the event's step.
            summary: a serialized ``Summary`` proto.
            wall_time: seconds since the epoch. Defaults to `None`: now.

        Raises:
            OSError: the event file could not be created or written.
        """
        if wall_time is None:
            wall_time = time.time()
        head = event_pb2.Event(wall_time=wall_time, step=step).SerializeToString()
        # A serialized message followed by one more serialized field is that message with the
        # field set: the pictures go to the file without being copied into an Event.
        head += _SUMMARY_TAG + _varint(len(summary))
        self._write_record(head, summary)
        if self._remote:
            self._pending_steps.add(step)

    def flush(self) -> None:
        """Makes what was written safe (and visible to a running TensorBoard).

        For a URL: makes what was written since the last flush a new event
        file, to be uploaded in the background (see `notices`).

        Raises:
            OSError: the sync failed (the disk is full...), or the local file
                was removed; the next write then starts a new file.
        """
        if self._remote:
            self._make_object()
            return
        file, path = self._file, self.path
        if file is None or self._size == self._flushed:
            return
        assert path is not None  # set with _file
        try:
            os.fsync(file.fileno())
        except OSError as error:
            self._cut(error)
        self._check(file, path)
        self._flushed = self._size

    def close(self) -> None:
        """Flushes (see `flush`) and closes the file; a later write starts a new one.

        For a URL, then waits until every object is uploaded, or for
        `upload_wait_seconds` at most: what is left waits on the local disk
        (see `notices`).
        """
        try:
            self.flush()
        finally:
            self._drop()
        if self._uploads is not None:
            self._uploads.finish(upload_wait_seconds())

    def notices(self) -> list[str]:
        """What a person should know about the uploads since the last call (a URL's failures,
        recoveries, what was left on the local disk), one message each; none for a local run."""
        return [] if self._uploads is None else self._uploads.notices()

    @property
    def upload_failures(self) -> int:
        """How many upload attempts have failed so far (0 for a local run)."""
        return 0 if self._uploads is None else self._uploads.failures

    def _make_object(self) -> None:
        if not self._pending:
            return
        assert self._uploads is not None
        # Names sort in the order objects are made, even within one second or when the
        # clock steps back: TensorBoard's Python loader reads them in name order.
        self._second = max(int(time.time()), self._second)
        data = _version_record() + self._pending
        self._uploads.add(_file_name(self._second), bytes(data), sorted(self._pending_steps))
        self._pending.clear()
        self._pending_steps.clear()

    def _check(self, file: io.FileIO, path: str) -> None:
        """Raises `OSError` (and drops the file) if `file` is no longer at `path`, whole."""
        try:
            on_disk = os.stat(path)
        except FileNotFoundError:
            on_disk = None
        mine = os.fstat(file.fileno())
        if on_disk is None or mine.st_nlink == 0 or not os.path.samestat(on_disk, mine):
            self._drop()
            raise OSError(
                f"the event file {path} was removed; what was written since the last flush is lost"
            )
        if mine.st_size < self._size:
            self._drop()
            raise OSError(
                f"the event file {path} is shorter than what was written ({mine.st_size} bytes, "
                f"not {self._size}: cut by another program?); what was written since the last "
                "flush is lost"
            )

    def _write_record(self, head: bytes, tail: bytes = b"") -> None:
        if self._remote:
            for piece in frame(head, tail):
                self._pending += piece
            return
        if self._file is None:
            self._open()
        try:
            for piece in frame(head, tail):
                self._write_all(piece)
        except OSError as error:
            self._cut(error)

    def _write_all(self, data: bytes) -> None:
        assert self._file is not None
        view = memoryview(data)
        while view:
            written = self._file.write(view)
            if not written:  # a raw file writes at least one byte or raises; never spin
                raise OSError(f"wrote nothing of {len(view)} bytes")
            self._size += written
            view = view[written:]

    def _open(self) -> None:
        directory = fs.local_path(self.run_dir)
        try:
            os.makedirs(directory, exist_ok=True)
            while True:
                path = os.path.join(directory, _file_name())
                try:
                    self._file = io.FileIO(path, "xb")
                    break
                except FileExistsError:  # another process with our pid (a container's)
                    continue
        except OSError as error:
            raise OSError(
                f"no event file could be created in {self.run_dir} ({error.strerror or error})"
            ) from error
        self.path, self._size, self._flushed = path, 0, 0
        try:
            try:
                self._write_all(_version_record())
            except OSError as error:
                self._cut(error)  # raises it, naming the file
        except OSError:  # a file without its version event must not be written on
            self._drop()
            try:
                os.remove(path)
            except OSError:
                pass
            raise
        self._flushed = self._size  # a failed first write cuts the file back to this

    def _cut(self, error: OSError) -> None:
        """Cuts the file back to its last good flush and raises `error` as this file's."""
        path = self.path
        try:
            assert self._file is not None
            self._file.truncate(self._flushed)
            self._file.seek(self._flushed)
            self._size = self._flushed
        except OSError:  # the file cannot be repaired: start a new one next time
            self._drop()
        raise OSError(
            f"the event file {path} could not be written ({error.strerror or error}); "
            "what was written since the last flush is lost"
        ) from error

    def _drop(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except OSError:  # the file is already lost or complete; closing is best effort
                pass


def _version_record() -> bytes:
    version = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
    version.source_metadata.writer = "tbviz"
    return b"".join(frame(version.SerializeToString()))


def _file_name(second: int | None = None) -> str:
    """A new event file's name, as TensorFlow 2 names its own, at `second` (None: now).

    The counter has a fixed width, so that the names of one process sort by their
    text in the order they were made (as TensorBoard's Python loader sorts them).
    """
    second = int(time.time()) if second is None else second
    return (
        f"events.out.tfevents.{second:010d}.{socket.gethostname()}"
        f".{os.getpid()}.{next(_counter):06d}.v2"
    )


def _varint(value: int) -> bytes:
    """Protobuf's base-128 varint encoding of a non-negative integer."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


#: How long `EventFileWriter.close` (the end of ``fit()``) waits for a URL's uploads at most,
#: in seconds; the environment variable ``TBVIZ_UPLOAD_WAIT_SECONDS`` sets another.
UPLOAD_WAIT_SECONDS = 60.0

# A failed upload is tried again with the next object, or after a pause that doubles up to this.
_MAX_PAUSE_SECONDS = 30.0


def upload_wait_seconds() -> float:
    """`UPLOAD_WAIT_SECONDS`, or the number in ``TBVIZ_UPLOAD_WAIT_SECONDS`` when it holds one."""
    try:
        return max(0.0, float(os.environ["TBVIZ_UPLOAD_WAIT_SECONDS"]))
    except (KeyError, ValueError):
        return UPLOAD_WAIT_SECONDS


@dataclass
class _Object:
    """An event file waiting to be uploaded: in memory (`data`) or on the local disk (`spooled`)."""

    name: str
    steps: list[int]
    data: bytes | None
    spooled: str | None = None
    tried: bool = False  # an attempt was made: it may have been stored without an answer


class _Uploads:
    """The new event files of one run directory URL, uploaded in order by a thread of their own.

    Objects reach the store in the order they were made (their names' order):
    TensorBoard's Python loader reads a run's files in name order and never
    goes back to one that appears before the one it reads. So an object whose
    upload failed holds back those made after it; it is tried again when the
    next one comes, after a pause (1 s, doubling to `_MAX_PAUSE_SECONDS`), and
    by `finish`. Uploads stop when `finish` has waited its time and start again
    with the next object: nothing is sent once ``fit()`` has returned, except a
    request already under way.

    An object that waits is kept on the local disk (`spool`, a folder made
    then under the user's cache directory), its memory freed; if the disk
    cannot take it, in memory. An object tried before is uploaded again only
    if the store does not hold it whole (a request may have been carried out
    without its answer arriving): nothing is uploaded twice or rewritten.
    """

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        self.failures = 0  # failed attempts so far
        self._queue: list[_Object] = []  # in name order; the first is the one being sent
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._running = False  # uploading (from `add` until `finish` gives up or is done)
        self._woken = False  # something changed: a pause ends early
        self._error: str | None = None  # the last failure not yet reported
        self._failed: set[int] = set()  # steps waiting at a failure not yet reported
        self._late: list[int] = []  # steps uploaded after a failure, not yet reported
        self._outage = False  # a failure happened and the queue has not been empty since
        self._left: list[str] = []  # what `finish` left behind, not yet reported
        self._spool: str | None = None

    def add(self, name: str, data: bytes, steps: list[int]) -> None:
        """Queues a new object (to be named `name` in the run directory)."""
        with self._lock:
            self._queue.append(_Object(name, steps, data))
            # One object in memory besides the one being sent: a slow store costs disk, not memory.
            for waiting in self._queue[1:-1]:
                self._keep_on_disk(waiting)
            self._running = self._woken = True
            self._lock.notify_all()
            if self._thread is None or not self._thread.is_alive():
                # A daemon: a request that never ends must not keep the process alive.
                self._thread = threading.Thread(
                    target=self._run, name="tbviz-upload", daemon=True
                )
                self._thread.start()

    def finish(self, timeout: float) -> None:
        """Waits until every object is uploaded, `timeout` seconds at most; then stops retrying
        and leaves what is still waiting on the local disk (reported by `notices`)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if not self._queue:
                return
            self._running = self._woken = True  # retry at once, what an earlier finish left too
            self._lock.notify_all()
            while self._queue and self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
            self._running = False
            self._lock.notify_all()
            if not self._queue:
                return
            for waiting in self._queue:
                self._keep_on_disk(waiting)
            steps = sorted(step for waiting in self._queue for step in waiting.steps)
            why = f" (last failure: {self._error})" if self._error else ""
            on_disk = [w for w in self._queue if w.spooled]
            they, are = ("it", "is") if len(steps) == 1 else ("they", "are")
            where = (
                f"{they} {are} kept in {self._spool} (complete event files, named as in the run: "
                f"`tbviz export` reads them, and copying them into {fs.redact(self.run_dir)} "
                "completes the run)"
                if len(on_disk) == len(self._queue)
                else f"{they} {are} kept in memory (the local disk could not take them)"
            )
            self._left.append(
                f"{_epochs(steps)} not uploaded to {fs.redact(self.run_dir)} after waiting "
                f"{timeout:g} s at the end of training{why}; {where}. {they.capitalize()} "
                f"{are} uploaded with the next epoch this process logs there."
            )
            self._error = None
            self._failed.clear()

    def notices(self) -> list[str]:
        """Failures, recoveries and what `finish` left, since the last call."""
        with self._lock:
            notices = []
            if self._error is not None:
                where = f"kept in {self._spool}" if self._spool else "kept in memory"
                notices.append(
                    f"could not upload {_epochs(sorted(self._failed))} to "
                    f"{fs.redact(self.run_dir)} ({self._error}); {where}, retried in the "
                    "background and with the next epoch"
                )
                self._error = None
                self._failed.clear()
            if self._late:
                notices.append(
                    f"uploaded {_epochs(sorted(self._late))} to {fs.redact(self.run_dir)} "
                    "after all"
                )
                self._late.clear()
            notices += self._left
            self._left.clear()
            return notices

    def _run(self) -> None:
        pause = 1.0
        while True:
            with self._lock:
                while not (self._queue and self._running):
                    self._lock.wait()
                item = self._queue[0]
                self._woken = False
            try:
                self._send(item)
            except Exception as error:  # noqa: BLE001 -- whatever the file system raises
                with self._lock:
                    self.failures += 1
                    self._error = fs.scrub(f"{type(error).__name__}: {error}", self.run_dir)
                    self._failed.update(step for waiting in self._queue for step in waiting.steps)
                    self._outage = True
                    self._keep_on_disk(item)
                    self._lock.notify_all()
                    self._lock.wait_for(lambda: self._woken or not self._running, pause)
                    pause = min(2 * pause, _MAX_PAUSE_SECONDS)
                continue
            with self._lock:
                self._queue.pop(0)
                if self._outage:
                    self._late += item.steps
                    self._outage = bool(self._queue)
                pause = 1.0
                self._lock.notify_all()
            if item.spooled:
                try:
                    os.remove(item.spooled)
                except OSError:  # already gone: nothing is lost, it is in the store
                    pass

    def _send(self, item: _Object) -> None:
        url = fs.join(self.run_dir, item.name)
        data = item.data
        if data is None:
            assert item.spooled is not None
            with open(item.spooled, "rb") as file:
                data = file.read()
        if item.tried and fs.size(url) == len(data):
            return  # the earlier attempt was carried out; its answer was lost
        item.tried = True
        fs.write(url, data)

    def _keep_on_disk(self, item: _Object) -> None:
        """Moves `item`'s bytes from memory to the spool folder (kept in memory if that fails)."""
        if item.data is None:
            return
        try:
            if self._spool is None:
                cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(
                    os.path.expanduser("~"), ".cache"
                )
                folder = os.path.join(cache, "tbviz", "unsent")
                os.makedirs(folder, exist_ok=True)
                self._spool = tempfile.mkdtemp(prefix=f"{tags.RUN_NAME}-", dir=folder)
            path = os.path.join(self._spool, item.name)
            with open(path, "xb") as file:
                file.write(item.data)
        except OSError:
            return
        item.spooled, item.data = path, None


# One upload queue per run directory URL in this process, whichever writer adds to it: a
# second writer's objects land after what an earlier one left unsent, in name order.
_queues: dict[str, _Uploads] = {}
_queues_lock = threading.Lock()


def _uploads_of(run_dir: str) -> _Uploads:
    with _queues_lock:
        if run_dir.rstrip("/") not in _queues:
            _queues[run_dir.rstrip("/")] = _Uploads(run_dir)
        return _queues[run_dir.rstrip("/")]


def _epochs(steps: list[int]) -> str:
    """``epoch 3`` or ``epochs 3, 4, 7``: steps as a person reads them (`tags.epoch_number`)."""
    numbers = ", ".join(str(tags.epoch_number(step)) for step in steps)
    return f"epoch {numbers}" if len(steps) == 1 else f"epochs {numbers}"


# PNG encoding threads; more than the cores only adds switching.
_ENCODING_THREADS = min(4, os.cpu_count() or 1)

# The last step written to each run directory by this process: a later fit() that
# starts again at epoch 0 goes on after it (see `RunWriter.last_step`).
_last_steps: dict[str, int] = {}
_last_steps_lock = threading.Lock()


class RunWriter:
    """Writes the logged epochs of one tbviz run, ``<log_dir>/activations``.

    `write_epoch` encodes an epoch's pictures on a few threads at once (the
    compressor releases the GIL), writes its layers in order and flushes, so
    that an epoch of many layers is on disk before the next one needs the
    writer; `submit` does it on a writer thread of its own, while training
    goes on. Threads are started on first use and stopped by `close`.

    Args:
        log_dir: the log directory (a local path or a URL).
    """

    def __init__(self, log_dir: str) -> None:
        self.run_dir = (
            f"{log_dir.rstrip('/')}/{tags.RUN_NAME}"
            if fs.is_url(log_dir)
            else os.path.join(log_dir, tags.RUN_NAME)
        )
        self._file = EventFileWriter(self.run_dir)
        self._encoders: ThreadPoolExecutor | None = None
        self._thread: ThreadPoolExecutor | None = None

    @property
    def last_step(self) -> int | None:
        """The last step this process wrote to this run directory (any writer), or None."""
        with _last_steps_lock:
            return _last_steps.get(self._key)

    @property
    def _key(self) -> str:
        return self.run_dir if fs.is_url(self.run_dir) else os.path.abspath(self.run_dir)

    def write_epoch(self, step: int, layers: Sequence[LayerRecord]) -> None:
        """Writes one logged epoch, then flushes it.

        Raises:
            OSError: it could not be written (see `EventFileWriter`); what was
                written before is safe.
        """
        if self._encoders is None:
            self._encoders = ThreadPoolExecutor(_ENCODING_THREADS, thread_name_prefix="tbviz-encoder")
        encoded = [self._encoders.submit(layer_summary, layer) for layer in layers]
        try:
            for future in encoded:
                self._file.write_summary(step, future.result())
        finally:
            for future in encoded:
                future.cancel()  # after a failure: encode no more of this epoch
            self._file.flush()  # what was written is safe, whatever happens next
        with _last_steps_lock:
            _last_steps[self._key] = max(step, _last_steps.get(self._key, step))

    def notices(self) -> list[str]:
        """What a person should know about a URL's uploads since the last call (see
        `EventFileWriter.notices`); the callback shows each as a warning."""
        return self._file.notices()

    @property
    def upload_failures(self) -> int:
        """How many upload attempts to a URL have failed so far."""
        return self._file.upload_failures

    def submit(self, step: int, layers: Sequence[LayerRecord]) -> Future:
        """`write_epoch` on the writer thread; the future holds its failure, if any."""
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="tbviz-writer")
        return self._thread.submit(self.write_epoch, step, layers)

    def close(self) -> None:
        """Waits for what was submitted, stops the threads, flushes and closes the file; for a
        URL, waits for the uploads a bounded time (see `EventFileWriter.close`).

        Raises:
            OSError: the last flush failed.
        """
        for pool in (self._thread, self._encoders):
            if pool is not None:
                pool.shutdown(wait=True)
        self._thread = self._encoders = None
        self._file.close()
