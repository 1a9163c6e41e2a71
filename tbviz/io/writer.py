"""Writes TensorBoard event files, without TensorFlow, on every Keras backend.

An event file is a sequence of TFRecords (`tbviz.io.records`), each an
``Event`` proto: first ``Event(file_version="brain.Event:2")``, then one
``Event(wall_time, step, summary)`` per `EventFileWriter.write_summary`.
Files are named as TensorFlow 2 names its own,
``events.out.tfevents.<seconds>.<host>.<pid>.<counter>.v2``, so that
TensorBoard orders them the same way.

A local run directory gets one file per writer session, appended to and
synced at each flush. A run directory given as a URL (`tbviz.io.fs`) is on an
object store, which cannot append: each flush there writes what was written
since the last one as a new, complete event file, and never rewrites one.

`RunWriter` writes the logged epochs of one tbviz run in the background,
each flushed before the next one starts.
"""

from __future__ import annotations

import io
import itertools
import os
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

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

    For a URL, records wait in memory until `flush`, which writes them as
    one new event file; if that fails they wait for the next flush.

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

    def flush(self) -> None:
        """Makes what was written safe (and visible to a running TensorBoard).

        Raises:
            OSError: the sync or upload failed (the disk is full, the server
                is down...), or the local file was removed; locally, the next
                write then starts a new file.
        """
        if self._remote:
            self._upload()
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
        """Flushes (see `flush`) and closes the file; a later write starts a new one."""
        try:
            self.flush()
        finally:
            self._drop()

    def _upload(self) -> None:
        if not self._pending:
            return
        filesystem, directory = fs.filesystem(self.run_dir)
        path = f"{directory.rstrip('/')}/{_file_name()}"
        data = bytes(_version_record() + self._pending)
        try:
            filesystem.pipe_file(path, data)
        except Exception as error:  # noqa: BLE001 -- whatever the file system raises
            raise OSError(
                f"could not write {self.run_dir.rstrip('/')}/{path.rsplit('/', 1)[-1]} "
                f"({type(error).__name__}: {error}); what was written since the last flush is "
                "kept and written with the next one"
            ) from error
        self._pending.clear()

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


def _file_name() -> str:
    """A new event file's name, as TensorFlow 2 names its own."""
    return (
        f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}"
        f".{os.getpid()}.{next(_counter)}.v2"
    )


def _varint(value: int) -> bytes:
    """Protobuf's base-128 varint encoding of a non-negative integer."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


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

    def submit(self, step: int, layers: Sequence[LayerRecord]) -> Future:
        """`write_epoch` on the writer thread; the future holds its failure, if any."""
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="tbviz-writer")
        return self._thread.submit(self.write_epoch, step, layers)

    def close(self) -> None:
        """Waits for what was submitted, stops the threads, flushes and closes the file.

        Raises:
            OSError: the last flush failed.
        """
        for pool in (self._thread, self._encoders):
            if pool is not None:
                pool.shutdown(wait=True)
        self._thread = self._encoders = None
        self._file.close()
