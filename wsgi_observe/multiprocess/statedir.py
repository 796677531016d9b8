"""The state directory: private to us, claimed by one server, never followed through a link.

Every file wsgi_observe shares between processes lives in one directory, and that directory
is attack surface (the predictable ``/tmp/wsgi_observe-<pid>`` of 0.1 let a local user
make a root gunicorn truncate a file, and plant counts). So:

- a directory we use must be a real directory (not a symlink), owned by the effective user
  (or, in a gunicorn master that drops privileges, by the worker user), and not writable by
  group or others; otherwise it is refused with one line saying why;
- without ``WSGI_OBSERVE_STATE_DIR``, a server's directory is created fresh: with
  ``mkdtemp`` when a gunicorn master prepares it, else (workers that must meet without a
  master's help) as ``<tmp>/wsgi_observe-<uid>/<master pid>-<master start>``, both levels
  made with mode 0700 and checked like a given one;
- one server owns a directory at a time: its master is written to ``owner.json``; a second
  server pointed at a directory whose owner is alive is refused, and a directory whose owner
  is gone is cleared and taken over;
- files in it are created with ``O_EXCL | O_NOFOLLOW`` and read back only when they are
  regular files of a sane size (:func:`read_regular`): never a FIFO, a device or a link.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Collection, Iterator
from typing import Optional

import orjson

__all__ = [
    "ENV_STATE_DIR",
    "RUN_FILES",
    "Identity",
    "StateDirError",
    "check_private",
    "claim",
    "identity_of",
    "make_private",
    "read_regular",
    "remove_stale_temps",
    "rendezvous_dir",
]

ENV_STATE_DIR = "WSGI_OBSERVE_STATE_DIR"
OWNER_FILE = "owner.json"
LOCK_FILE = "state.lock"
#: Prefixes and names of the files one server run writes (cleared when a run takes over).
RUN_FILES = (
    "w-",
    "archive.json",
    ".archive-",
    "names",
    "alerts.lock",
    ".tmp-",
    "window-",
    "window.lock",
)
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0)
_KINDS = {
    stat.S_IFREG: "a regular file",
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}

#: A process as (pid, start time in hundredths of a second): pids are reused, this is not.
Identity = tuple[int, int]


class StateDirError(RuntimeError):
    """The state directory can't be used; the message is one line saying why."""


def _name(path: str, variable: Optional[str]) -> str:
    return f"{variable}={path!r}" if variable else f"state directory {path!r}"


def check_private(
    path: str, *, owners: Optional[Collection[int]] = None, variable: Optional[str] = None
) -> None:
    """Raise :class:`StateDirError` unless ``path`` is a directory we may trust.

    Trusted: not a symlink, a directory, owned by one of ``owners`` (default: the effective
    user), not writable by group or others, and writable by us.
    """
    owners = (os.geteuid(),) if owners is None else owners
    where = _name(path, variable)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise StateDirError(f"{where}: directory does not exist") from None
    except OSError as error:
        raise StateDirError(f"{where}: cannot look at it ({error.strerror})") from None
    kind = stat.S_IFMT(st.st_mode)
    if kind != stat.S_IFDIR:
        what = _KINDS.get(kind, "not a directory")
        raise StateDirError(f"{where}: is {what}, not a directory")
    if st.st_uid not in owners:
        mine = ", ".join(str(uid) for uid in owners)
        raise StateDirError(
            f"{where}: owned by uid {st.st_uid}, not by this server's user (uid {mine}); "
            "refusing a directory someone else controls"
        )
    if st.st_mode & 0o022:
        raise StateDirError(
            f"{where}: writable by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
            "expected a private directory (chmod 700)"
        )
    if st.st_uid == os.geteuid() and not os.access(path, os.W_OK | os.X_OK):
        raise StateDirError(f"{where}: directory is not writable")


def make_private(path: str, *, variable: Optional[str] = None) -> None:
    """Create ``path`` with mode 0700, or check the one that is there (never follow it)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as error:
        where = _name(path, variable)
        raise StateDirError(f"{where}: cannot create it ({error.strerror})") from None
    check_private(path, variable=variable)


def identity_of(pid: int) -> Optional[Identity]:
    """``(pid, start time)`` of a live process, or None when there is no such process."""
    import psutil

    try:
        return (pid, round(psutil.Process(pid).create_time() * 100))
    except (psutil.Error, OSError, ValueError):
        return None


def _runtime_root() -> str:
    """Where per-user folders go: a runtime directory only this user (or root) can write to
    when there is one (``/run/user/<uid>``, ``/run`` for root), else the temp directory."""
    uid = os.geteuid()
    for candidate, owner in ((f"/run/user/{uid}", uid), ("/run", 0)):
        if owner != uid:
            continue
        try:
            st = os.lstat(candidate)
        except OSError:
            continue
        if (
            stat.S_ISDIR(st.st_mode)
            and st.st_uid == uid
            and not st.st_mode & 0o022
            and os.access(candidate, os.W_OK | os.X_OK)
        ):
            return candidate
    # Only the base: rendezvous_dir() makes its per-user folder there with make_private(),
    # which refuses a folder another user planted (never follows or uses it).
    return tempfile.gettempdir()  # safe: a base for make_private(), never written to itself


def rendezvous_dir(master: Identity) -> str:
    """The directory the workers of ``master`` share when no one prepared one for them.

    ``<runtime>/wsgi_observe-<uid>/<pid>-<start>`` (see :func:`_runtime_root`), both levels
    private; a folder another user made there first is refused, never used. Directories of
    masters that are gone are removed on the way (they are ours, in our private folder).
    """
    base = os.path.join(_runtime_root(), f"wsgi_observe-{os.geteuid()}")
    make_private(base)
    name = f"{master[0]}-{master[1]}"
    path = os.path.join(base, name)
    if not os.path.lexists(path):
        _prune(base, keep=name)
    make_private(path)
    return path


def _prune(base: str, keep: str) -> None:
    """Remove the directories of servers whose master is no longer running."""
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        pid_text, _, start_text = name.partition("-")
        if name == keep or not (pid_text.isdigit() and start_text.isdigit()):
            continue
        if identity_of(int(pid_text)) == (int(pid_text), int(start_text)):
            continue  # that server still runs
        path = os.path.join(base, name)
        with contextlib.suppress(OSError):
            if stat.S_ISDIR(os.lstat(path).st_mode):
                shutil.rmtree(path, ignore_errors=True)


def read_regular(path: str, max_bytes: int, offset: int = 0) -> bytes:
    """The bytes of ``path`` from ``offset``, if it is a regular file of at most ``max_bytes``.

    Opened without following a symlink and without blocking (a FIFO planted under a
    worker file's name must not hang a scrape or the gunicorn master). Raises ``OSError``
    (``FileNotFoundError`` when it is gone) or ``ValueError`` for anything else.
    """
    fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{os.path.basename(path)} is not a regular file")
        if st.st_size > max_bytes:
            raise ValueError(f"{os.path.basename(path)} is {st.st_size} bytes, over {max_bytes}")
        if offset:
            os.lseek(fd, offset, os.SEEK_SET)
        chunks = []
        remaining = st.st_size - offset
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def hand_over(fd: int, directory: str) -> None:
    """A file root makes in a directory owned by someone else (a gunicorn master whose
    workers drop privileges) is given to that owner, so the workers can use it too."""
    if os.geteuid() != 0:
        return
    st = os.stat(directory)
    if st.st_uid != 0:
        os.fchown(fd, st.st_uid, st.st_gid)


def create_exclusive(path: str, mode: int = 0o600, *, flags: int = os.O_WRONLY) -> int:
    """A new file, never one that exists or a link: ``O_CREAT | O_EXCL | O_NOFOLLOW``."""
    fd = os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        hand_over(fd, os.path.dirname(path) or ".")
    except OSError:
        os.close(fd)
        raise
    return fd


def write_atomic(directory: str, name: str, data: bytes) -> None:
    """Write ``name`` in ``directory`` by rename, from an exclusive temporary file."""
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{os.urandom(6).hex()}")
    fd = create_exclusive(tmp)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, os.path.join(directory, name))


_TEMP_RE = re.compile(r"^\.tmp-[0-9]+-[0-9a-f]{12}$")
#: A temporary file of :func:`write_atomic` this old was left by a process that died
#: between creating and renaming it (a SIGKILL mid-write); writing one takes milliseconds.
_STALE_TEMP_S = 60.0


def remove_stale_temps(directory: str, names: Optional[Collection[str]] = None) -> int:
    """Remove the temporary files of :func:`write_atomic` (``names`` of ``directory``, or
    its listing) older than a minute: left by a process killed mid-write, they would stay
    until the server stops. Returns how many were removed; never raises."""
    if names is None:
        try:
            names = os.listdir(directory)
        except OSError:
            return 0
    now = time.time()
    removed = 0
    for name in names:
        if _TEMP_RE.match(name) is None:
            continue
        path = os.path.join(directory, name)
        with contextlib.suppress(OSError):
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and now - st.st_mtime > _STALE_TEMP_S:
                os.unlink(path)
                removed += 1
    return removed


@contextlib.contextmanager
def locked(directory: str, name: str = LOCK_FILE) -> Iterator[None]:
    """An exclusive ``flock`` on ``directory/name`` (created private, never a link)."""
    path = os.path.join(directory, name)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, f"{name} is a symbolic link") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{name} is not a regular file")
        hand_over(fd, directory)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_owner(path: str) -> Optional[Identity]:
    try:
        data = orjson.loads(read_regular(os.path.join(path, OWNER_FILE), 4096))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return (0, 0)  # unreadable: treated as an owner that is gone
    if (
        isinstance(data, dict)
        and type(data.get("pid")) is int
        and type(data.get("start")) is int
        and data["pid"] > 0
    ):
        return (data["pid"], data["start"])
    return (0, 0)


def clear_run_files(path: str) -> None:
    """Remove the files of an earlier server run (never anything else in the directory)."""
    for name in os.listdir(path):
        if name.startswith(RUN_FILES):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(path, name))


def claim(path: str, master: Identity, *, variable: Optional[str] = None) -> bool:
    """Make ``master``'s server the owner of ``path``; True if it just took it over.

    Raises :class:`StateDirError` when another server that is still running owns it. A
    directory whose owner is gone is cleared of that run's files first.
    """
    with locked(path):
        owner = _read_owner(path)
        if owner == master:
            return False
        if owner is not None and owner != (0, 0) and identity_of(owner[0]) == owner:
            raise StateDirError(
                f"{_name(path, variable)}: already used by another running server "
                f"(master pid {owner[0]}); give each server its own directory"
            )
        clear_run_files(path)
        write_atomic(path, OWNER_FILE, orjson.dumps({"pid": master[0], "start": master[1]}))
        return True
