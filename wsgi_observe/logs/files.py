"""Where JSON lines go: buffered, whole-line sinks and multi-process-safe rotating files.

A sink is one buffer of lines written to one or more targets (the JSON console and
``application.log`` share a sink: each line is queued once and written to both at a flush).
Lines are buffered per process (at most ``buffer_bytes``, at most ``flush_interval_s``) like
nginx's ``access_log ... buffer= flush=``; WARNING and above are written at once, and the
buffer is flushed before a fork and at exit.

Many processes (gunicorn workers) may write the same files. Each line is appended with
``O_APPEND`` as part of one ``write()`` holding whole lines only, so lines never split or
interleave; rotation happens under an ``flock`` on ``LOG_DIR/.<name>.lock`` and re-checks
the file's size and inode once the lock is held, so two workers never rotate twice; a worker
whose file was rotated by another notices the new inode before its next write and reopens.
A worker still holding the old file for a moment writes into ``application.log.1``: its lines
are kept, in the backup.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import stat as statmod
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from itertools import chain, islice
from typing import Any, Optional

try:  # POSIX; elsewhere rotation is only safe within one process
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "BACKUP_COUNT",
    "BUFFER_BYTES",
    "FLUSH_INTERVAL_S",
    "MAX_BYTES",
    "FileTarget",
    "Sink",
    "StreamTarget",
    "Target",
    "flush",
]

MAX_BYTES = 10 * 1024 * 1024
BACKUP_COUNT = 10
FLUSH_INTERVAL_S = 0.5
BUFFER_BYTES = 64 * 1024
_PIPE_BUF = 4096  # writes up to this size to a pipe are atomic (POSIX)
_END = (b"",)

#: Called by the flusher twice a second (the access line re-syncs its clock there).
tick_hooks: list[Callable[[], None]] = []

_sinks: set[Sink] = set()
_sinks_lock = threading.Lock()
_flusher: Optional[threading.Thread] = None
_flusher_running = False
_flush_interval_s = FLUSH_INTERVAL_S
_flusher_wake = threading.Event()


class Target:
    """Where a sink's bytes go; ``write`` gets whole lines only."""

    name = "?"
    reported_at = -1e9

    def write(self, data: bytes) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Release what the target holds (it may still be written to afterwards)."""

    def report(self, error: BaseException) -> None:
        """Tell stderr, at most once a minute, that this target can't be written."""
        now = time.monotonic()
        if now - self.reported_at < 60:
            return
        self.reported_at = now
        try:
            sys.stderr.write(f"wsgi_observe: cannot write log lines to {self.name}: {error}\n")
        except Exception:
            pass


class Sink:
    """Whole JSON lines, buffered (up to ``buffer_bytes``), each flush one ``write()`` per
    target. ``write`` only appends to a deque (atomic), so the hot path takes no lock.

    Lines are queued without their newline and the flush adds it, joining them: a line made
    by an encoder that cannot end it in ``\\n`` (msgspec, for the access line) needs no
    second copy of itself."""

    def __init__(self, targets: list[Target], buffer_bytes: int) -> None:
        self.targets = targets
        self.lines: deque[bytes] = deque()
        self.pending = 0
        self.limit = buffer_bytes  # 0 once closed
        self.lock = threading.RLock()
        self.flushing = 0  # the thread inside flush(), so a line logged by a target waits
        with _sinks_lock:
            _sinks.add(self)

    def write(self, line: bytes, urgent: bool = False) -> None:
        """Queue ``line`` (one line, without its newline); ``urgent`` writes it now."""
        self.lines.append(line)
        self.pending += len(line) + 1
        if urgent or self.pending >= self.limit:
            self.flush()
        elif not _flusher_running:
            start_flusher()

    def flush(self) -> None:
        """Write every queued line; when it returns, they have reached the targets, also
        those another thread had taken and was still writing (it waits for that write)."""
        lines = self.lines
        if not lines and not self.flushing:
            return
        me = threading.get_ident()
        if self.flushing == me:
            return  # a target logged while writing (stderr redirected to logging): later
        with self.lock:  # (held by a thread that is writing: this waits for it)
            count = len(lines)
            if not count:
                return
            self.pending = 0
            self.flushing = me  # before the lines leave the queue (see the check above)
            try:
                # popleft() exactly ``count`` times, in C: lines appended meanwhile stay.
                # Joined by newlines, and one after the last (the empty line at the end).
                data = b"\n".join(chain(islice(iter(lines.popleft, None), count), _END))
                for target in self.targets:
                    try:
                        target.write(data)
                    except Exception as error:  # logging never raises: report and go on
                        target.report(error)
            finally:
                self.flushing = 0

    def close(self) -> None:
        self.flush()
        self.limit = 0  # later writes are flushed at once (a file is reopened for them)
        with _sinks_lock:
            _sinks.discard(self)
        with self.lock:
            for target in self.targets:
                target.close()


class StreamTarget(Target):
    """A text or binary stream (stderr, a pipe): lines kept whole, PIPE_BUF at a time."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.name = str(getattr(stream, "name", "the console"))
        # Only pipes and sockets need PIPE_BUF-sized writes to keep lines whole; a file or a
        # terminal takes a whole buffer in one write.
        self.chunked = True
        with contextlib.suppress(Exception):
            mode = os.fstat(stream.fileno()).st_mode
            self.chunked = not (statmod.S_ISREG(mode) or statmod.S_ISCHR(mode))

    def write(self, data: bytes) -> None:
        stream = self.stream
        pieces = _chunks(data) if self.chunked else (data,)
        binary = getattr(stream, "buffer", None)
        if binary is not None:
            stream.flush()  # whatever was printed before goes first
            for piece in pieces:
                binary.write(piece)
                binary.flush()
        else:
            for piece in pieces:
                stream.write(piece.decode("utf-8", "replace"))
                stream.flush()


def _chunks(data: bytes) -> Iterator[bytes]:
    """``data`` cut at line ends into pieces of at most PIPE_BUF (longer lines go alone), so
    lines from several processes sharing a pipe never interleave."""
    size = len(data)
    start = 0
    while size - start > _PIPE_BUF:
        cut = data.rfind(b"\n", start, start + _PIPE_BUF)
        if cut < 0:
            cut = data.find(b"\n", start + _PIPE_BUF)
            if cut < 0:
                break
        yield data[start : cut + 1]
        start = cut + 1
    if start < size:
        yield data[start:]


@contextlib.contextmanager
def _flock(path: str) -> Iterator[None]:
    """An exclusive ``flock`` across processes; a fresh descriptor each time, so a forked
    child never shares its parent's lock."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    while written < len(data):  # only on a full disk or a signal; keep what is left
        data = data[written:]
        written = os.write(fd, data)


class FileTarget(Target):
    """``path`` opened ``O_APPEND``, rotated at ``max_bytes`` keeping ``backup_count`` files.

    Safe with many processes on one file (see the module docstring): every write is whole
    lines in one ``write()``; before it, one ``stat`` tells whether another process rotated
    (new inode: reopen) or whether this write would pass ``max_bytes`` (rotate under the
    ``flock``, after looking again).
    """

    def __init__(self, path: str, max_bytes: int, backup_count: int) -> None:
        self.path = path
        self.name = path
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        directory, base = os.path.split(path)
        self.lock_path = os.path.join(directory, f".{base}.lock")
        self.fd = -1
        self.inode: tuple[int, int] = (0, 0)
        self.open()  # fails here, at configure time, when the directory is not writable

    def open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        st = os.fstat(fd)
        old, self.fd, self.inode = self.fd, fd, (st.st_dev, st.st_ino)
        if old >= 0:
            os.close(old)

    def write(self, data: bytes) -> None:
        reopened = self.fd < 0
        if reopened:
            self.open()  # written to after close(): reopen rather than lose the lines
        try:
            st: Optional[os.stat_result] = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if st is None or (st.st_dev, st.st_ino) != self.inode:
            self.open()  # rotated by another process (or moved away): follow the name
            st = os.fstat(self.fd)
        if (
            self.max_bytes > 0
            and self.backup_count > 0
            and st.st_size > 0
            and st.st_size + len(data) > self.max_bytes
        ):
            self.rotate(len(data))
        _write_all(self.fd, data)
        if reopened:
            self.close()

    def rotate(self, incoming: int) -> None:
        with _flock(self.lock_path):
            # Under the lock, look again: another process may have rotated already.
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                self.open()
                return
            if (st.st_dev, st.st_ino) != self.inode:
                self.open()
                st = os.fstat(self.fd)
            if st.st_size == 0 or st.st_size + incoming <= self.max_bytes:
                return
            for index in range(self.backup_count - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{self.path}.{index}", f"{self.path}.{index + 1}")
            os.replace(self.path, f"{self.path}.1")
            self.open()

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


def _flush_loop() -> None:
    while True:
        _flusher_wake.wait(_flush_interval_s)
        _flusher_wake.clear()
        for hook in tick_hooks:
            hook()
        with _sinks_lock:
            sinks = list(_sinks)
        for sink in sinks:
            try:
                sink.flush()
            except Exception:  # pragma: no cover - flush() reports its own errors
                pass


def start_flusher() -> None:
    global _flusher, _flusher_running
    with _sinks_lock:
        if _flusher_running:
            return
        _flusher_running = True
        _flusher = threading.Thread(target=_flush_loop, name="wsgi_observe-log-flush", daemon=True)
        _flusher.start()


def flush() -> None:
    """Write every buffered line now (it happens anyway within ``flush_interval_s``)."""
    with _sinks_lock:
        sinks = list(_sinks)
    for sink in sinks:
        sink.flush()


def _after_fork_in_child() -> None:
    # The flusher thread and any lock held by another thread did not come along; lines that
    # were still queued belong to the parent, which writes them (never write them twice).
    global _flusher, _flusher_running
    global _sinks_lock
    _sinks_lock = threading.Lock()
    _flusher = None
    _flusher_running = False
    for sink in list(_sinks):
        sink.lock = threading.RLock()
        sink.flushing = 0
        sink.lines.clear()
        sink.pending = 0


def set_flush_interval(seconds: float) -> None:
    global _flush_interval_s
    _flush_interval_s = float(seconds)
    _flusher_wake.set()  # let a running flusher pick up the new interval


def is_flusher_running() -> bool:
    return _flusher_running


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=flush, after_in_child=_after_fork_in_child)
atexit.register(flush)
