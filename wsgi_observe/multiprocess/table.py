"""One process's slots in a memory-mapped file: what the store writes to when shared.

- ``w-<id>.keys``: append-only JSON lines. The first is a header (``id``, ``pid``,
  ``role``, ``started_at``, ``master``, ``max_endpoints``); each other is ``[slot, *key]``,
  written before the slot is ever incremented.
- ``w-<id>.vals``: int64 slots, memory-mapped. The store increments them in place, so the
  page cache holds every finished request even if the process is killed with SIGKILL.

The id is a random uuid, not the pid, so pid reuse cannot mix two processes' counts. The
process holds an exclusive ``flock`` on its keys file while it lives; the kernel drops it
however it dies, which is how a sweeper knows the file belongs to a dead process.

Disk space is reserved up front (``posix_fallocate``), a chunk at a time: a slot is handed
out only on reserved space, so a full disk can never turn a counter increment into SIGBUS.
When the disk is full and the table cannot grow, the process keeps serving: its values
move to memory (a copy, same slots), it says so once in the log, and ``/metrics`` reports
it (``degraded``); its file keeps what it had counted until then.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import threading
import time
import uuid
from typing import Any, Optional

import orjson

from .statedir import create_exclusive

__all__ = ["CAPACITY", "CHUNK", "SLOT_BYTES", "TableError", "WorkerTable"]

_log = logging.getLogger("wsgi_observe.multiprocess")

#: 4 Mi slots (32 MiB of address space; only reserved chunks take disk or memory).
CAPACITY = 4 * 1024 * 1024
#: Slots reserved at a time (512 KiB): a process with 500 endpoints uses about one chunk.
CHUNK = 64 * 1024
SLOT_BYTES = 8


class TableError(OSError):
    """A process's state file could not be created (one line; the process stays unshared)."""


def _reserve(fd: int, offset: int, length: int) -> None:
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is not None:
        fallocate(fd, offset, length)


class WorkerTable:
    """The slots of one process, in a memory-mapped file under ``state_dir``.

    Example::

        table = WorkerTable("/run/app-state", role="worker", master_pid=os.getppid())
        store.use_table(table)            # what the first request of a worker does
        collect_snapshot("/run/app-state") # any process: everyone's numbers

    Reads nothing from the environment.
    """

    def __init__(
        self,
        state_dir: str,
        *,
        role: str = "worker",
        master_pid: Optional[int] = None,
        max_endpoints: Optional[int] = None,
        capacity: int = CAPACITY,
        chunk: int = CHUNK,
    ) -> None:
        self.state_dir = state_dir
        self.id = uuid.uuid4().hex
        self.pid = os.getpid()
        self.capacity = capacity
        self.chunk = max(1, min(chunk, capacity))
        base = os.path.join(state_dir, f"w-{self.id}")
        self.keys_path = base + ".keys"
        self.vals_path = base + ".vals"
        self.keys: list[tuple[Any, ...]] = []
        self.degraded: Optional[str] = None
        self._lock = threading.Lock()
        self._map: Optional[mmap.mmap] = None
        self.keys_fd = -1
        self.vals_fd = -1
        pending = os.path.join(state_dir, f".tmp-{self.id}.keys")
        try:
            self.vals_fd = create_exclusive(self.vals_path, flags=os.O_RDWR)
            os.ftruncate(self.vals_fd, capacity * SLOT_BYTES)  # sparse: address space only
            _reserve(self.vals_fd, 0, self.chunk * SLOT_BYTES)
            self._map = mmap.mmap(self.vals_fd, capacity * SLOT_BYTES)
            self.reserved = self.chunk
            self.values: Any = memoryview(self._map).cast("q")
            # The keys file appears under its name already locked and with its header:
            # a sweeper must never see it unlocked (it would take this live process for a
            # dead one, archive it and delete its files under its feet).
            self.keys_fd = create_exclusive(pending, flags=os.O_WRONLY | os.O_APPEND)
            fcntl.flock(self.keys_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held while we live
            header = {
                "id": self.id,
                "pid": self.pid,
                "role": role,
                "started_at": time.time(),
                "master": master_pid,
                "max_endpoints": max_endpoints,
            }
            _write_all(self.keys_fd, orjson.dumps(header) + b"\n")
            os.rename(pending, self.keys_path)
        except OSError as error:
            with contextlib.suppress(OSError):
                os.unlink(pending)
            self._discard()
            reason = error.strerror or str(error)
            message = f"cannot create state file in {state_dir}: {reason}"
            raise TableError(error.errno, message) from None

    def _discard(self) -> None:
        self.close()
        for path in (self.keys_path, self.vals_path):
            with contextlib.suppress(OSError):
                os.unlink(path)

    def alloc(self, key: tuple[Any, ...]) -> int:
        """A new slot for ``key`` (the store calls this under its own lock)."""
        with self._lock:
            slot = len(self.keys)
            if self.degraded is None:
                try:
                    if slot >= self.capacity:
                        raise OSError(0, f"the state file is full ({self.capacity} slots)")
                    if slot >= self.reserved:
                        end = min(self.reserved + self.chunk, self.capacity)
                        start = self.reserved * SLOT_BYTES
                        _reserve(self.vals_fd, start, end * SLOT_BYTES - start)
                        self.reserved = end
                    # The key line is on disk (page cache) before the slot is incremented.
                    _write_all(self.keys_fd, orjson.dumps([slot, *key]) + b"\n")
                except OSError as error:
                    self._degrade(error)
            if self.degraded is not None:
                self.values.append(0)
            self.keys.append(key)
            return slot

    def _degrade(self, error: OSError) -> None:
        """Keep counting in memory (same slots) when the file cannot grow."""
        reason = error.strerror or str(error) or "cannot grow the state file"
        self.degraded = reason
        self.values = self.values[: len(self.keys)].tolist()
        _log.warning(
            "wsgi_observe: %s: state file %s cannot grow (%s); this process now counts in "
            "memory and other processes see its numbers as of now",
            self.state_dir,
            os.path.basename(self.keys_path),
            reason,
        )

    def close(self) -> None:
        """Release the mapping and the lock (the files stay for a sweep to absorb)."""
        values = getattr(self, "values", None)
        if isinstance(values, memoryview):
            with contextlib.suppress(BufferError, ValueError):
                values.release()
        if self._map is not None:
            with contextlib.suppress(BufferError, ValueError):
                self._map.close()
        for name in ("keys_fd", "vals_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)

    def forget(self) -> None:
        """In a forked child: drop the parent's table without touching its lock or file.

        Closing our copy of the descriptor keeps the parent's ``flock`` (it is released
        only when every copy is closed, and the parent holds one).
        """
        self.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:  # pragma: no cover - os.write raises instead
            raise OSError(0, "short write")
        view = view[written:]
