"""A child's stderr read through a pipe, as a process supervisor reads it.

Under systemd, Docker or Kubernetes a server's stderr is a pipe that a supervisor drains;
the default configuration writes its JSON lines there too (the console), besides
``LOG_DIR/application.log``. The suite gives its workers the same: a pipe drained by a
thread of the parent, which keeps only the last bytes (to say why a child died). What the
reading costs lands in the parent, as it lands in journald or dockerd in production.
"""

from __future__ import annotations

import threading
from typing import IO

__all__ = ["Tail"]


class Tail:
    """Drains ``stream`` (a child's stderr pipe) in a thread, keeping its last ``keep`` bytes."""

    def __init__(self, stream: IO[bytes], keep: int = 4096) -> None:
        self.stream = stream
        self.keep = keep
        self.data = b""
        self.bytes = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._drain, name="bench-stderr", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        read = getattr(self.stream, "read1", self.stream.read)
        while True:
            try:
                chunk = read(65536)
            except (OSError, ValueError):
                return
            if not chunk:
                return
            with self._lock:
                self.bytes += len(chunk)
                self.data = (self.data + chunk)[-self.keep :]

    def text(self, size: int = 1500) -> str:
        with self._lock:
            return self.data[-size:].decode(errors="replace")

    def close(self, timeout_s: float = 5.0) -> None:
        """Wait for the end of the stream (the child exited), then close it."""
        self._thread.join(timeout_s)
        try:
            self.stream.close()
        except OSError:
            pass
