"""The endpoint names of a whole server: one cap for all of its processes.

``max_endpoints`` bounds the names a process admits; without a shared list, every recycled
worker that met new paths would admit its own ``max_endpoints`` more, and the merged view
and the archive would grow without end. ``names`` in the state directory lists every name
admitted by any process of the server (JSON lines, appended under a lock, read back as
input); a process admits a name only while that list holds fewer than ``max_endpoints``.
"""

from __future__ import annotations

import contextlib
import os
import threading

import orjson

from .statedir import hand_over, locked, read_regular

__all__ = ["NAMES", "SharedNames"]

NAMES = "names"
_MAX_NAME = 1024


class SharedNames:
    """The names admitted by this server's processes, with ``admit`` for new ones.

    Example::

        names = SharedNames("/run/app-state", max_endpoints=500)
        names.admit("/api/leads/<int:id>")   # True, and every process now knows it
    """

    def __init__(self, state_dir: str, max_endpoints: int) -> None:
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, NAMES)
        self.max_endpoints = max_endpoints
        self.known: set[str] = set()
        self._offset = 0
        self._pending = b""
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        try:
            data = read_regular(self.path, (_MAX_NAME + 8) * self.max_endpoints * 2, self._offset)
        except FileNotFoundError:
            return
        self._offset += len(data)
        data = self._pending + data
        cut = data.rfind(b"\n") + 1
        self._pending = data[cut:]
        for line in data[:cut].splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                name = orjson.loads(line)
                if type(name) is str and 0 < len(name) <= _MAX_NAME:
                    self.known.add(name)

    def admit(self, name: str) -> bool:
        """Whether ``name`` may be counted under its own name (False: ``<overflow>``).

        Raises ``OSError`` or ``ValueError`` when the list can't be read or written; the
        caller then falls back to its own per-process cap.
        """
        with self._lock:
            if name in self.known:
                return True
            self._refresh()
            if name in self.known:
                return True
            if len(self.known) >= self.max_endpoints or len(name) > _MAX_NAME:
                return False
            with locked(self.state_dir, ".names.lock"):
                self._refresh()  # another process may have added names meanwhile
                if name in self.known:
                    return True
                if len(self.known) >= self.max_endpoints:
                    return False
                fd = os.open(
                    self.path,
                    os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                )
                try:
                    hand_over(fd, self.state_dir)
                    os.write(fd, orjson.dumps(name) + b"\n")
                finally:
                    os.close(fd)
                self._refresh()
                self.known.add(name)
            return True
