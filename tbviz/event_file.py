"""Writes TensorBoard event files, without TensorFlow, on every Keras backend.

An event file is a sequence of TFRecords, each an ``Event`` proto: first
``Event(file_version="brain.Event:2")``, then one ``Event(wall_time, step,
summary)`` per `EventFileWriter.write_summary`. A record is the data's length
(8 bytes, little-endian), the masked CRC-32C of those 8 bytes, the data, and
the masked CRC-32C of the data (`tbviz.events` reads them back and checks
both). Files are named as TensorFlow 2 names its own,
``events.out.tfevents.<seconds>.<host>.<pid>.<counter>.v2``, so that TensorBoard
orders them the same way.

TensorBoard's own pure-Python writer is not used: it computes CRC-32C in
Python (about 0.4 s per MiB of pictures) and imports TensorFlow whenever it
is installed. Here ``google-crc32c`` does it in C.

A run directory on a remote file system (``gs://``, ``s3://``, anything with
``://``) is written through TensorFlow's ``tf.io.gfile``, which knows them,
when TensorFlow is loaded (the TensorFlow backend); otherwise that is an
error that says so.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import socket
import struct
import sys
import time
from collections.abc import Iterator

import google_crc32c
from tensorboard.compat.proto import event_pb2

# Unique file names within this process, even for several files in the same second.
_counter = itertools.count()

_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
# Field 5 (``summary``) of ``Event``, length-delimited: protobuf's wire tag for it.
_SUMMARY_TAG = b"\x2a"


class EventFileWriter:
    """Appends summaries to an event file in one run directory, created on first write.

    Each record goes straight to the operating system: a crash of the
    process loses nothing written, and a running TensorBoard sees it at once.
    `flush` also syncs the file to the disk (as TensorFlow's writer does) and
    checks that the file is still the one at its path. Not thread-safe.

    Failures raise `OSError` naming the file. After a failed write or sync,
    what was written since the last good `flush` is cut off the file, which
    stays valid and is written on. A file removed under the writer is
    reported by the next `flush`, and the next write starts a new file.

    Args:
        run_dir: the directory of the run, created when needed.
    """

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        self.path: str | None = None  # the event file being written, once created
        self._file: io.FileIO | _RemoteFile | None = None
        self._size = 0  # bytes written to it
        self._flushed = 0  # its size at the last good flush

    def write_summary(self, step: int, summary: bytes, *, wall_time: float | None = None) -> None:
        """Appends ``Event(wall_time, step, summary)``.

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
        """Syncs what was written to the disk and checks that the file is still there.

        Raises:
            OSError: the sync failed (the disk is full, ...), or the file was
                removed; in that case the next write starts a new file.
        """
        file, path = self._file, self.path
        if file is None or self._size == self._flushed:
            return
        assert path is not None  # set with _file
        try:
            if isinstance(file, _RemoteFile):
                file.flush()
            else:
                os.fsync(file.fileno())
        except OSError as error:
            self._cut(error)
        if isinstance(file, io.FileIO):  # a remote file has no inode to compare
            self._check(file, path)
        self._flushed = self._size

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

    def close(self) -> None:
        """Flushes (see `flush`) and closes the file; a later write starts a new one."""
        try:
            self.flush()
        finally:
            self._drop()

    def _write_record(self, head: bytes, tail: bytes = b"") -> None:
        if self._file is None:
            self._open()
        length = _LENGTH.pack(len(head) + len(tail))
        crc = google_crc32c.extend(google_crc32c.value(head), tail)
        pieces = (length + _CRC.pack(_masked(google_crc32c.value(length))) + head, tail)
        try:
            for piece in (*pieces, _CRC.pack(_masked(crc))):
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
        try:
            if "://" in self.run_dir:
                path = f"{self.run_dir.rstrip('/')}/{_file_name()}"
                self._file = _RemoteFile(path)
            else:
                os.makedirs(self.run_dir, exist_ok=True)
                while True:
                    path = os.path.join(self.run_dir, _file_name())
                    try:
                        self._file = io.FileIO(path, "xb")
                        break
                    except FileExistsError:  # another process with our pid (a container's)
                        continue
        except OSError as error:
            raise OSError(
                f"no event file could be created in {self.run_dir} "
                f"({error.strerror or error})"
            ) from error
        self.path, self._size, self._flushed = path, 0, 0
        version = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
        version.source_metadata.writer = "tbviz"
        try:
            self._write_record(version.SerializeToString())
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


class _RemoteFile:
    """An event file on a remote file system, written through TensorFlow's ``tf.io.gfile``.

    Its errors are raised as `OSError`. It cannot be cut back: after a failed
    write, the writer starts a new file.
    """

    def __init__(self, path: str) -> None:
        tf = sys.modules.get("tensorflow")
        if tf is None:
            raise OSError(
                "a remote file system is written through TensorFlow's tf.io.gfile, and "
                "TensorFlow is not loaded: use a local log_dir, or Keras' TensorFlow backend"
            )
        with _as_oserror():
            tf.io.gfile.makedirs(path.rsplit("/", 1)[0])
            self._file = tf.io.gfile.GFile(path, "wb")

    def write(self, data: memoryview) -> int:
        with _as_oserror():
            self._file.write(data.tobytes())
        return len(data)

    def flush(self) -> None:
        with _as_oserror():
            self._file.flush()

    def truncate(self, size: int) -> int:
        raise OSError("a remote event file cannot be cut back")

    def seek(self, offset: int) -> int:
        raise OSError("a remote event file cannot be cut back")

    def close(self) -> None:
        with _as_oserror():
            self._file.close()


@contextlib.contextmanager
def _as_oserror() -> Iterator[None]:
    """Raises TensorFlow's errors (``tf.errors.OpError``) as `OSError`."""
    try:
        yield
    except OSError:
        raise
    except Exception as error:  # noqa: BLE001 -- whatever the file system raises
        raise OSError(f"{type(error).__name__}: {error}") from error


def _file_name() -> str:
    """A new event file's name, as TensorFlow 2 names its own."""
    return (
        f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}"
        f".{os.getpid()}.{next(_counter)}.v2"
    )


def _masked(crc: int) -> int:
    """TFRecord's checksum mask (rotated, then offset)."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    """Protobuf's base-128 varint encoding of a non-negative integer."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
