"""The archive: the counts of processes that are gone, folded in exactly once.

:func:`sweep` folds the files of dead processes (their ``flock`` can be taken) into
``archive.json`` under the state lock, exactly once (the archive lists the ids it holds),
written by atomic rename, and only then deletes them; so files stay bounded by the live
processes and counters never go down. The gunicorn master sweeps when a worker exits; any
scrape sweeps too. Archive records are read back like any other input: checked for their
exact shape, the malformed ones skipped (never copied into the next archive).

The archive keeps at most ``max_endpoints`` endpoint names (the ones it had, then the
busiest); the others fold into ``<overflow>``, so recycling workers cannot grow it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Optional

import orjson

from ..endpoints import OVERFLOW
from ..kpidata import cap_series, is_archived, is_signed, latest_only
from .reader import Reader, is_dead, is_worker_id, parse_key, worker_ids
from .statedir import locked, read_regular, write_atomic

__all__ = ["ARCHIVE", "Archive", "archive_names", "read_archive", "sweep"]

_log = logging.getLogger("wsgi_observe.multiprocess")

ARCHIVE = "archive.json"
_MERGED_KEEP = 10_000
_ARCHIVE_MAX_BYTES = 64 * 1024 * 1024


# The archive ------------------------------------------------------------------------------


class Archive:
    """A parsed ``archive.json``: absorbed ids and ``(key, value)`` pairs (never mutated)."""

    __slots__ = ("max_endpoints", "merged", "pairs", "raw")

    def __init__(
        self,
        raw: bytes,
        merged: frozenset[str],
        pairs: list[tuple[tuple[Any, ...], int]],
        max_endpoints: Optional[int],
    ) -> None:
        self.raw = raw
        self.merged = merged
        self.pairs = pairs
        self.max_endpoints = max_endpoints


_EMPTY_ARCHIVE = Archive(b"", frozenset(), [], None)
_archive_cache: dict[str, Archive] = {}
_archive_lock = threading.Lock()


def _parse_archive(raw: bytes) -> Archive:
    data = orjson.loads(raw)
    if type(data) is not dict:
        raise ValueError("not a JSON object")
    merged = frozenset(i for i in data.get("merged", ()) if type(i) is str and is_worker_id(i))
    pairs: list[tuple[tuple[Any, ...], int]] = []
    bad = 0
    raw_pairs = data.get("pairs", ())
    if type(raw_pairs) is not list:
        raise ValueError("pairs is not a list")
    for item in raw_pairs:
        if type(item) is list and len(item) == 2 and type(item[1]) is int:
            key = parse_key(item[0])
            if key is not None and key[0] != "g":
                low = -(2**63) if is_signed(key) else 0
                if low <= item[1] < 2**63:
                    pairs.append((key, item[1]))
                    continue
        bad += 1
    if bad:
        _log.warning("wsgi_observe: skipped %d malformed records of the archive", bad)
    limit = data.get("max_endpoints")
    return Archive(raw, merged, pairs, limit if type(limit) is int and limit > 0 else None)


def read_archive(state_dir: str) -> Archive:
    """The archive, parsed again only when its bytes changed (compared by content: file
    times are coarse and inodes are reused, so two quick sweeps can look the same)."""
    path = os.path.join(state_dir, ARCHIVE)
    try:
        raw = read_regular(path, _ARCHIVE_MAX_BYTES)
    except FileNotFoundError:
        return _EMPTY_ARCHIVE
    except (OSError, ValueError) as error:
        _log.warning("wsgi_observe: unreadable archive in %s: %s", state_dir, error)
        return _EMPTY_ARCHIVE
    with _archive_lock:
        cached = _archive_cache.get(path)
        if cached is not None and cached.raw == raw:
            return cached
    try:
        archive = _parse_archive(raw)
    except (ValueError, TypeError) as error:
        _log.warning("wsgi_observe: unreadable archive in %s: %s", state_dir, error)
        return _EMPTY_ARCHIVE
    with _archive_lock:
        _archive_cache[path] = archive
    return archive


def _cap_endpoints(
    totals: dict[tuple[Any, ...], int], keep_first: set[str], max_endpoints: int
) -> dict[tuple[Any, ...], int]:
    """``totals`` with endpoint names past ``max_endpoints`` folded into ``<overflow>``:
    names in ``keep_first`` stay, then the busiest of the rest."""
    counts: dict[str, int] = {}
    for key, value in totals.items():
        if key[1] == "ep":
            name = key[2]
            counts[name] = counts.get(name, 0) + (value if key[0] == "c" else 0)
    if len(counts) <= max_endpoints:
        return totals
    kept = [n for n in counts if n in keep_first or n == OVERFLOW][:max_endpoints]
    rest = sorted((n for n in counts if n not in kept), key=lambda n: (-counts[n], n))
    allowed = set(kept) | set(rest[: max(max_endpoints - len(kept), 0)])
    out: dict[tuple[Any, ...], int] = {}
    for key, value in totals.items():
        if key[1] == "ep" and key[2] not in allowed:
            key = (key[0], key[1], OVERFLOW, *key[3:])
        out[key] = out.get(key, 0) + value
    return out


_LEFTOVER_AGE_S = 60.0


def _remove_leftovers(state_dir: str, ids: set[str]) -> None:
    """Files a process left half made when it died while creating its table (a values file
    without keys, a keys file not yet renamed into place), once they are a minute old."""
    try:
        names = os.listdir(state_dir)
    except OSError:
        return
    now = time.time()
    for name in names:
        if name.startswith("w-") and name.endswith(".vals"):
            if name[2:-5] in ids:
                continue
        elif not (name.startswith(".tmp-") and name.endswith(".keys")):
            continue
        path = os.path.join(state_dir, name)
        with contextlib.suppress(OSError):
            if now - os.lstat(path).st_mtime > _LEFTOVER_AGE_S:
                os.unlink(path)


def sweep(
    state_dir: str,
    *,
    own_id: Optional[str] = None,
    absorbed_ids: Optional[Callable[[Sequence[str]], None]] = None,
) -> int:
    """Fold every dead process's counts into the archive and delete its files.

    Exactly once per process, even with several processes sweeping at the same time (the
    state lock serialises them; the archive lists the ids it holds). Returns how many were
    absorbed. Raises ``OSError`` only when the directory itself fails.
    """
    ids = worker_ids(state_dir)
    dead = [i for i in ids if i != own_id and is_dead(os.path.join(state_dir, f"w-{i}.keys"))]
    _remove_leftovers(state_dir, set(ids))
    if not dead:
        return 0
    absorbed = 0
    with locked(state_dir):
        archive = read_archive(state_dir)
        merged = set(archive.merged)  # a copy: scrapes may hold the cached one
        totals: dict[tuple[Any, ...], int] = {}
        for key, value in archive.pairs:
            totals[key] = totals.get(key, 0) + value
        limit = archive.max_endpoints
        done = []
        for worker_id in dead:
            reader = Reader(state_dir, worker_id)
            if worker_id not in merged:
                try:
                    reader.refresh()
                    for key, value in reader.pairs():
                        if key[0] == "k":
                            # KPIs: live-only gauges go; summed gauges (negative too),
                            # definitions and the last set values stay
                            if not is_archived(key, value):
                                continue
                        elif key[0] == "g" or value <= 0:
                            continue  # gauges of a dead process (in-flight) mean nothing
                        totals[key] = totals.get(key, 0) + value
                    limit = reader.header.get("max_endpoints") or limit
                except FileNotFoundError:
                    continue  # another sweeper absorbed and removed it just now
                except (OSError, ValueError) as error:
                    _log.warning("wsgi_observe: unreadable state file w-%s: %s", worker_id, error)
                finally:
                    reader.close()
                merged.add(worker_id)
                absorbed += 1
            done.append(worker_id)
        names = {key[2] for key, _ in archive.pairs if key[1] == "ep"}
        if limit:
            totals = _cap_endpoints(totals, names, limit)
        totals = latest_only(totals)
        shown = {(key[2], key[3]) for key, _ in archive.pairs if key[0] == "k" and key[1] != "d"}
        totals = cap_series(totals, shown)
        document = {
            "merged": list(merged)[-_MERGED_KEEP:],
            "max_endpoints": limit,
            "pairs": [[list(k), v] for k, v in totals.items()],
        }
        write_atomic(state_dir, ARCHIVE, orjson.dumps(document))
        # Only now, with the archive holding them, do the files go.
        for worker_id in done:
            for suffix in (".keys", ".vals"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(state_dir, f"w-{worker_id}{suffix}"))
    if absorbed_ids is not None:
        absorbed_ids(done)
    return absorbed


def archive_names(archive: Archive) -> list[str]:
    return [key[2] for key, _ in archive.pairs if key[1] == "ep" and key[0] == "s"]
