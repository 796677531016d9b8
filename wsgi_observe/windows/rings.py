"""Where the ring is kept: in this process's memory, or as files of the private state
directory (written under a lock, read back like untrusted input)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
from collections import OrderedDict, deque
from typing import Any, Optional

from ..metrics import Snapshot
from .entries import _MAX_FILE_BYTES, decode

_log = logging.getLogger("wsgi_observe.windows")

#: Entries of the ring in the state directory: ``window-<milliseconds of the clock>``.
ENTRY_PREFIX = "window-"
_ENTRY_RE = re.compile(r"^window-([0-9]{1,16})$")
LOCK_FILE = "window.lock"


class _Decoded:
    """The last few entries decoded (the baselines of the 1, 5 and 15-minute windows a
    dashboard asks for again and again), so each is read and checked once."""

    def __init__(self, size: int = 3) -> None:
        self.size = size
        self.items: OrderedDict[Any, Snapshot] = OrderedDict()

    def get(self, key: Any) -> Optional[Snapshot]:
        found = self.items.get(key)
        if found is not None:
            self.items.move_to_end(key)
        return found

    def put(self, key: Any, snapshot: Snapshot) -> Snapshot:
        self.items[key] = snapshot
        while len(self.items) > self.size:
            self.items.popitem(last=False)
        return snapshot


class _MemoryRing:
    """Entries in this process's memory: a single process, or numbers not shared."""

    def __init__(self) -> None:
        self.entries: deque[tuple[float, bytes]] = deque()

    def times(self) -> list[float]:
        return [t for t, _ in self.entries]

    def load(self, t: float, cache: _Decoded) -> Optional[Snapshot]:
        key = ("memory", t)
        found = cache.get(key)
        if found is not None:
            return found
        for when, data in self.entries:
            if when == t:
                return cache.put(key, decode(data)[1])
        return None

    @contextlib.contextmanager
    def writing(self) -> Any:
        yield True  # the caller holds the Windows lock

    def add(self, t: float, data: bytes) -> None:
        self.entries.append((t, data))

    def drop(self, t: float) -> None:
        self.entries = deque((when, data) for when, data in self.entries if when != t)

    def size(self) -> int:
        return sum(len(data) for _, data in self.entries)


class _FileRing:
    """Entries as files in the server's private state directory (see statedir.py)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.listed: Optional[list[str]] = None  # the directory's names, as last listed

    def _names(self) -> dict[float, str]:
        found: dict[float, str] = {}
        try:
            names = os.listdir(self.directory)
        except OSError:
            return found
        self.listed = names
        for name in names:
            match = _ENTRY_RE.match(name)
            if match:
                found[int(match.group(1)) / 1000] = name
        return found

    def times(self) -> list[float]:
        return sorted(self._names())

    def load(self, t: float, cache: _Decoded) -> Optional[Snapshot]:
        from ..multiprocess.statedir import read_regular

        name = f"{ENTRY_PREFIX}{round(t * 1000)}"
        path = os.path.join(self.directory, name)
        try:
            st = os.lstat(path)
            key = (path, st.st_ino, st.st_size, st.st_mtime_ns)
            found = cache.get(key)
            if found is not None:
                return found
            when, snapshot = decode(read_regular(path, _MAX_FILE_BYTES))
        except FileNotFoundError:
            return None  # dropped meanwhile
        except (OSError, ValueError) as error:
            _log.warning("wsgi_observe: ignoring the ring entry %s: %s", name, error)
            return None
        if round(when * 1000) != round(t * 1000):
            _log.warning("wsgi_observe: ignoring the ring entry %s: its time is not its name", name)
            return None
        return cache.put(key, snapshot)

    @contextlib.contextmanager
    def writing(self) -> Any:
        """True while this process holds the ring's lock (False: another one writes now)."""
        path = os.path.join(self.directory, LOCK_FILE)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as error:
            _log.debug("wsgi_observe: no ring lock: %s", error)
            yield False
            return
        from ..multiprocess.statedir import hand_over

        try:
            import stat

            if not stat.S_ISREG(os.fstat(fd).st_mode):
                yield False
                return
            # Root (a gunicorn master that drops privileges) makes it the workers' too, or
            # they could never take the lock and write an entry.
            with contextlib.suppress(OSError):
                hand_over(fd, self.directory)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    _log.debug("wsgi_observe: ring lock: %s", error)
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def add(self, t: float, data: bytes) -> None:
        from ..multiprocess.statedir import remove_stale_temps, write_atomic

        write_atomic(self.directory, f"{ENTRY_PREFIX}{round(t * 1000)}", data)
        # A writer SIGKILLed between creating its temporary file and renaming it left one.
        remove_stale_temps(self.directory, self.listed)

    def drop(self, t: float) -> None:
        name = self._names().get(t)
        if name is not None:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.directory, name))

    def size(self) -> int:
        total = 0
        for name in self._names().values():
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(self.directory, name)).st_size
        return total


