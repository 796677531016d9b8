"""Reading one process's state files back, as the input they are.

Files are opened only when they are regular files of a sane size (never a FIFO or a
link), and every line is checked for its exact shape: a header first (its id, a positive
pid), then key lines whose slots come in order 0, 1, 2, ... with a key of a known kind
(``c``, ``h``, ``s``, ``e``, ``g``, ``k``), known namespace, text of sane length and a histogram
bucket in range. Nothing after a line out of shape is trusted; it is logged once.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import stat
from typing import TYPE_CHECKING, Any, Optional

import orjson

from ..histograms import COUNTS_LEN
from ..kpidata import parse_kpi_key
from ..metrics import INFLIGHT
from .statedir import read_regular
from .table import CAPACITY, SLOT_BYTES

if TYPE_CHECKING:
    from .merge import Merge

__all__ = ["Reader", "is_dead", "is_worker_id", "parse_key", "worker_ids"]

_log = logging.getLogger("wsgi_observe.multiprocess")

_MAX_TEXT = 1024
_KEYS_MAX_BYTES = 512 * 1024 * 1024
_ID_CHARS = frozenset("0123456789abcdef")
_SPACES = ("ep", "fn")
_LABEL_MAX = 64


# Shapes -----------------------------------------------------------------------------------


def _text(value: Any, limit: int = _MAX_TEXT) -> bool:
    return type(value) is str and 0 < len(value) <= limit


def parse_key(item: Any) -> Optional[tuple[Any, ...]]:
    """The key in a list read back from a file, or None unless it has exactly a key's shape.

    ``["c", ns, name, method, class]``, ``["h", ns, name, bucket]``, ``["s", ns, name]``,
    ``["e", ns, name]`` or ``["g", "inflight"]``, with ``ns`` ``"ep"`` or ``"fn"``; or a
    business KPI's key, ``["k", ...]`` (:func:`wsgi_observe.kpidata.parse_kpi_key`).
    """
    if type(item) is not list or not item:
        return None
    kind = item[0]
    if kind == "g":
        return INFLIGHT if item == ["g", "inflight"] else None
    if kind == "k":
        return parse_kpi_key(item)
    if len(item) < 3 or item[1] not in _SPACES or not _text(item[2]):
        return None
    if kind == "c":
        if len(item) == 5 and _text(item[3], _LABEL_MAX) and type(item[4]) is str:
            if len(item[4]) <= _LABEL_MAX:
                return tuple(item)
        return None
    if kind == "h":
        if len(item) == 4 and type(item[3]) is int and 0 <= item[3] < COUNTS_LEN:
            return tuple(item)
        return None
    if kind in ("s", "e") and len(item) == 3:
        return tuple(item)
    return None


def is_worker_id(text: str) -> bool:
    return len(text) == 32 and _ID_CHARS.issuperset(text)


def worker_ids(state_dir: str) -> list[str]:
    """Ids of the process tables in ``state_dir`` (by file name; nothing is opened)."""
    try:
        names = os.listdir(state_dir)
    except FileNotFoundError:
        return []
    ids = (n[2:-5] for n in names if n.startswith("w-") and n.endswith(".keys"))
    return sorted(i for i in ids if is_worker_id(i))


def is_dead(keys_path: str) -> bool:
    """Whether no live process holds the table's lock (it exited or was killed)."""
    try:
        fd = os.open(keys_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError as error:
        if error.errno == errno.ELOOP:
            return True  # a symlink is no process's table: absorb (skip) and remove it
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return True  # a FIFO or a device under a table's name: nobody's table
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    finally:
        os.close(fd)  # closing drops the probe lock we may have taken
    return True


# One process's files ----------------------------------------------------------------------


class Reader:
    """A parsed, cached view of one process's files (keys are append-only: parse the tail)."""

    def __init__(self, state_dir: str, worker_id: str) -> None:
        base = os.path.join(state_dir, f"w-{worker_id}")
        self.id = worker_id
        self.keys_path = base + ".keys"
        self.vals_path = base + ".vals"
        self.offset = 0
        self.pending = b""
        self.header: dict[str, Any] = {}
        self.next_slot = 0
        self.broken = False  # a line out of shape: nothing after it is trusted
        self.slots: list[tuple[int, tuple[Any, ...]]] = []
        self.targets: list[int] = []  # merged index of each slot read so far
        self._merge: Optional[Merge] = None
        self.warned = False
        self._map: Optional[mmap.mmap] = None
        self._view: Optional[memoryview] = None

    def warn(self, what: str) -> None:
        if not self.warned:
            self.warned = True
            _log.warning("wsgi_observe: skipping %s in state file %s", what, self.keys_path)

    def refresh(self) -> None:
        """Parse the key lines added since the last call (raises OSError, ValueError)."""
        if self.broken:
            return
        data = read_regular(self.keys_path, _KEYS_MAX_BYTES, self.offset)
        self.offset += len(data)
        data = self.pending + data
        cut = data.rfind(b"\n") + 1
        self.pending = data[cut:]
        for line in data[:cut].splitlines():
            if not self._take(line):
                self.broken = True
                self.warn("a line that is not a key line (the rest is ignored)")
                return

    def _take(self, line: bytes) -> bool:
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError:
            return False
        if not self.header:
            return self._take_header(item)
        if type(item) is not list or len(item) < 2 or type(item[0]) is not int:
            return False
        # Slots are handed out in order: 0, 1, 2, ... A line that skips or repeats one is
        # not ours, and two keys on one slot would count it twice.
        if item[0] != self.next_slot or item[0] >= CAPACITY:
            return False
        key = parse_key(item[1:])
        if key is None:
            return False
        self.slots.append((item[0], key))
        self.next_slot += 1
        return True

    def _take_header(self, item: Any) -> bool:
        if (
            type(item) is not dict
            or item.get("id") != self.id
            or type(item.get("pid")) is not int
            or item["pid"] <= 0
        ):
            return False
        master = item.get("master")
        limit = item.get("max_endpoints")
        self.header = {
            "pid": item["pid"],
            "master": master if type(master) is int and master > 0 else None,
            "max_endpoints": limit if type(limit) is int and limit > 0 else None,
        }
        return True

    def values(self) -> memoryview:
        if self._view is None:
            fd = os.open(self.vals_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise ValueError("the values file is not a regular file")
                size = min(st.st_size, CAPACITY * SLOT_BYTES)
                size -= size % SLOT_BYTES
                if size == 0:
                    return memoryview(b"").cast("q")
                self._map = mmap.mmap(fd, size, prot=mmap.PROT_READ)
            finally:
                os.close(fd)
            self._view = memoryview(self._map).cast("q")
        return self._view

    def pairs(self) -> list[tuple[tuple[Any, ...], int]]:
        values = self.values()
        limit = len(values)
        out = []
        for slot, key in self.slots:
            if slot >= limit:
                self.warn("key lines past the end of the values file")
                break
            out.append((key, values[slot]))
        return out

    def fold(self, merged: Merge) -> None:
        """Bring ``merged`` up to date with this process's values (merged indexes cached).

        Slots are checked to come in order 0, 1, 2, ..., so the values in use are one
        slice of the mapping, taken at C speed.
        """
        if self._merge is not merged:  # indexes are those of one merge: start again
            self._merge = merged
            self.targets = []
        values = self.values()
        limit = len(values)
        slots = self.slots
        if len(slots) != len(self.targets):
            for slot, key in slots[len(self.targets) :]:
                if slot >= limit:
                    self.warn("key lines past the end of the values file")
                    break
                self.targets.append(merged.index(key))
        merged.update("w-" + self.id, self.targets, values[: len(self.targets)].tolist())

    def close(self) -> None:
        if self._view is not None:
            self._view.release()
            self._view = None
        if self._map is not None:
            self._map.close()
            self._map = None
