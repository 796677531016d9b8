"""``configure_logging()``: the guide's handlers on the root logger, once per process.

It sends every line to:

- the console (``stream``, default ``sys.stderr``): the guide's coloured text in development
  on a TTY, JSON lines otherwise and in production (``LOG_FORMAT`` overrides; ``ecs`` makes
  every line, console and files, an Elastic Common Schema line);
- ``LOG_DIR/application.log`` (every level) and ``LOG_DIR/errors.log`` (ERROR and above),
  JSON lines, rotated at 10 MB with 10 backups (see :mod:`wsgi_observe.logs.files`).

A JSON console and application.log take the same lines, so one handler with one buffer
writes both; errors.log has its own handler (and a text console its own).

Wrapping an app sets this up too (:func:`install`), unless ``log_handlers`` is off: when the
application configured logging itself (the root logger has handlers), its handlers and
formats stay and only our files are added, so no line is written twice to the console.
Either way ours are installed once per process; an explicit :func:`configure_logging`
replaces them, whether it runs before or after the middleware is built.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any, Optional, Union

from ..config import Config, ConfigError
from .ecs import EcsFormatter
from .files import (
    BACKUP_COUNT,
    BUFFER_BYTES,
    FLUSH_INTERVAL_S,
    MAX_BYTES,
    FileTarget,
    Sink,
    StreamTarget,
    Target,
    set_flush_interval,
)
from .formats import ConsoleFormatter, JsonFormatter

__all__ = [
    "Setup",
    "configure_logging",
    "current_setup",
    "hand_over",
    "install",
    "reset_logging",
]

_DEVELOPMENT = ("development", "dev", "local")
_INFO = logging.INFO
_WARNING = logging.WARNING


class JsonHandler(logging.Handler):
    """JSON lines into a sink (file or stream); WARNING and above are written at once."""

    def __init__(self, sink: Sink, formatter: JsonFormatter, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.sink = sink
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            formatter = self.formatter
            if isinstance(formatter, JsonFormatter):
                line = formatter.serialize(record)
            else:
                line = self.format(record).encode("utf-8", "replace")
            self.sink.write(line, record.levelno >= _WARNING)
        except RecursionError:  # pragma: no cover - as logging.StreamHandler does
            raise
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self.sink.flush()

    def close(self) -> None:
        try:
            self.sink.close()
        finally:
            super().close()


class _ConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The guide's text line on a console."""


class Setup:
    """What was installed on the root logger, and how the access line reaches it directly.

    ``explicit``: made by :func:`configure_logging` (an implicit one, made by wrapping, is
    replaced by the next explicit call and left alone by later middlewares).
    """

    def __init__(
        self, handlers: list[logging.Handler], config: Config, level: int, *, explicit: bool
    ) -> None:
        self.handlers = handlers
        self.config = config
        self.level = level
        self.explicit = explicit
        # The access line skips logging while the root logger has exactly these.
        self.root_handlers = list(handlers)
        # Sinks that take INFO lines (not errors.log): the access line is appended to them
        # directly, without a LogRecord.
        self.info_sinks = tuple(
            handler.sink
            for handler in handlers
            if isinstance(handler, JsonHandler) and handler.level <= _INFO
        )
        self.text = tuple(handler for handler in handlers if not isinstance(handler, JsonHandler))
        # With LOG_FORMAT=ecs, the formatter whose service fields the access line uses.
        self.ecs: Optional[EcsFormatter] = next(
            (
                handler.formatter
                for handler in handlers
                if isinstance(handler, JsonHandler) and isinstance(handler.formatter, EcsFormatter)
            ),
            None,
        )


#: What is installed now (read per request by the middleware and the access line).
active: Optional[Setup] = None
_configure_lock = threading.Lock()
# Log directories this process made (a gunicorn master hands them to its worker user).
_created_dirs: set[str] = set()


def current_setup() -> Optional[Setup]:
    """What our handlers are, if they are installed (read per request by the access line)."""
    return active


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:
        return False


def _whole(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}={value!r}: expected a whole number at least {minimum}")
    return value


def _build(
    config: Config,
    *,
    stream: Any,
    console: bool,
    level: int,
    max_bytes: int,
    backup_count: int,
    buffer_bytes: int,
) -> list[logging.Handler]:
    """Our handlers for ``config``; fails with one line when ``LOG_DIR`` can't be written."""
    tty = _is_tty(stream)
    chosen = config.log_format
    if chosen is None:
        development = config.environment in _DEVELOPMENT and not config.is_production
        chosen = "console" if tty and development else "json"
    formatter = EcsFormatter(config) if chosen == "ecs" else JsonFormatter()
    handlers: list[logging.Handler] = []
    targets: list[Target] = []
    try:
        if console and chosen == "console":
            text = _ConsoleHandler(stream)
            text.setFormatter(ConsoleFormatter(color=tty))
            text.setLevel(level)
            handlers.append(text)
        elif console:
            targets.append(StreamTarget(stream))
        errors: Optional[FileTarget] = None
        if config.log_dir:
            try:
                if not os.path.isdir(config.log_dir):
                    os.makedirs(config.log_dir, exist_ok=True)
                    _created_dirs.add(os.path.abspath(config.log_dir))
                targets.append(
                    FileTarget(
                        os.path.join(config.log_dir, "application.log"), max_bytes, backup_count
                    )
                )
                errors = FileTarget(
                    os.path.join(config.log_dir, "errors.log"), max_bytes, backup_count
                )
            except OSError as error:
                reason = error.strerror or str(error)
                raise ConfigError(
                    f"LOG_DIR={config.log_dir!r}: cannot write log files there ({reason}); "
                    "set LOG_DIR to a writable directory, or to an empty value for no files"
                ) from None
        # The JSON console and application.log take the same lines: one handler, one buffer.
        if targets:
            handlers.append(JsonHandler(Sink(targets, buffer_bytes), formatter, level))
        if errors is not None:
            handlers.append(
                JsonHandler(Sink([errors], buffer_bytes), formatter, max(level, logging.ERROR))
            )
    except BaseException:
        for handler in handlers:
            handler.close()
        for target in targets:
            target.close()
        raise
    return handlers


def _swap(handlers: list[logging.Handler], setup: Setup, root_level: Optional[int]) -> None:
    """Replace our previous handlers (if any) by ``handlers``, under the lock."""
    global active
    root = logging.getLogger()
    previous = active
    if previous is not None:
        for handler in previous.handlers:
            root.removeHandler(handler)
            handler.close()
    if root_level is not None:
        root.setLevel(root_level)
    for handler in handlers:
        root.addHandler(handler)
    active = setup


def configure_logging(
    level: Optional[str] = None,
    log_dir: Union[str, os.PathLike[str], None] = None,
    fmt: Optional[str] = None,
    *,
    config: Optional[Config] = None,
    stream: Any = None,
    max_bytes: int = MAX_BYTES,
    backup_count: int = BACKUP_COUNT,
    flush_interval_s: float = FLUSH_INTERVAL_S,
    buffer_bytes: int = BUFFER_BYTES,
) -> logging.Logger:
    """Set up the root logger: console, ``LOG_DIR/application.log`` and ``LOG_DIR/errors.log``.

    Parameters: ``level``, ``log_dir`` and ``fmt`` (``"json"``/``"console"``/``"ecs"``) override
    ``LOG_LEVEL``, ``LOG_DIR`` and ``LOG_FORMAT`` (via :meth:`Config.from_env`, or over
    ``config`` when given); ``log_dir=""`` turns the files off. ``stream`` is the console
    (default ``sys.stderr``). Files rotate at ``max_bytes`` keeping ``backup_count``
    backups; up to ``buffer_bytes`` of INFO/DEBUG lines wait at most ``flush_interval_s``.
    Calling it again replaces what the previous call (or wrapping) installed, and handlers
    installed by anyone else stay. Returns the root logger. Example::

        configure_logging()                       # LOG_LEVEL, LOG_DIR, LOG_FORMAT
        configure_logging("DEBUG", log_dir="/var/log/crm", fmt="json")
        logger = get_logger(__name__)

    Reads: ``LOG_LEVEL``, ``LOG_DIR``, ``LOG_FORMAT``, ``SENTRY_ENVIRONMENT``. A bad value
    raises :class:`ConfigError` naming it; so does a ``LOG_DIR`` that can't be written.
    """
    overrides: dict[str, Any] = {}
    if level is not None:
        overrides["log_level"] = level
    if log_dir is not None:
        overrides["log_dir"] = os.fspath(log_dir)
    if fmt is not None:
        overrides["log_format"] = fmt
    if config is None:
        config = Config.from_env(**overrides)
    elif overrides:
        config = config.replace(**overrides)
    _whole("max_bytes", max_bytes, 0)
    _whole("backup_count", backup_count, 0)
    _whole("buffer_bytes", buffer_bytes, 0)
    if (
        isinstance(flush_interval_s, bool)
        or not isinstance(flush_interval_s, (int, float))
        or not flush_interval_s > 0
    ):
        raise ConfigError(
            f"flush_interval_s={flush_interval_s!r}: expected a number greater than 0"
        )
    numeric = logging.getLevelName(config.log_level)
    handlers = _build(
        config,
        stream=sys.stderr if stream is None else stream,
        console=True,
        level=logging.NOTSET,
        max_bytes=max_bytes,
        backup_count=backup_count,
        buffer_bytes=buffer_bytes,
    )
    with _configure_lock:
        _swap(handlers, Setup(handlers, config, numeric, explicit=True), numeric)
        set_flush_interval(flush_interval_s)
    return logging.getLogger()


def install(config: Config) -> None:
    """Our handlers for a middleware's ``config``, unless ours are installed already.

    Called when a middleware is built with ``log_handlers`` on. When the root logger has
    handlers of someone else (the application configured logging), the console is theirs:
    only our files are added, at ``config.log_level``, and the root level is left alone.
    A ``LOG_DIR`` that can't be written raises :class:`ConfigError` with one line.
    """
    if active is not None:
        return
    with _configure_lock:
        if active is not None:
            return
        root = logging.getLogger()
        foreign = bool(root.handlers)
        numeric = logging.getLevelName(config.log_level)
        handlers = _build(
            config,
            stream=sys.stderr,
            console=not foreign,
            level=numeric if foreign else logging.NOTSET,
            max_bytes=MAX_BYTES,
            backup_count=BACKUP_COUNT,
            buffer_bytes=BUFFER_BYTES,
        )
        _swap(
            handlers, Setup(handlers, config, numeric, explicit=False), None if foreign else numeric
        )


def reset_logging() -> None:
    """Remove and close what :func:`configure_logging` or wrapping installed (tests)."""
    global active
    root = logging.getLogger()
    with _configure_lock:
        previous, active = active, None
        if previous is not None:
            for handler in previous.handlers:
                root.removeHandler(handler)
                handler.close()


def hand_over(uid: int, gid: int) -> None:
    """Give the log directories this process made, and our files in them, to ``uid``:
    a gunicorn master that runs as root but whose workers drop privileges calls this, so
    the workers can write and rotate. Directories it did not make are never touched."""
    for directory in sorted(_created_dirs):
        try:
            os.chown(directory, uid, gid)
            for name in os.listdir(directory):
                if name.startswith(
                    ("application.log", "errors.log", ".application.log", ".errors.log")
                ):
                    os.chown(os.path.join(directory, name), uid, gid, follow_symlinks=False)
        except OSError:
            continue
