"""A process that logs numbered lines into a shared LOG_DIR (for tests/test_logs_rotation.py).

Usage: python _log_worker.py LOG_DIR WORKER COUNT MAX_BYTES BACKUPS BUFFER_BYTES

Configures logging, touches ``LOG_DIR/ready-WORKER``, waits for ``LOG_DIR/go`` and then
writes COUNT uniquely numbered lines: even numbers as ordinary records, odd numbers as
access lines of requests through a wrapped app (path ``/w/WORKER/NUMBER``).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wsgi_observe.logs import configure_logging, get_logger
from wsgi_observe.metrics import MetricsStore
from wsgi_observe.middleware import ObservabilityMiddleware


def _hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def main() -> int:
    log_dir, worker, count, max_bytes, backups, buffer_bytes = sys.argv[1:7]
    number, total = int(worker), int(count)
    with open(os.devnull, "w") as console:
        configure_logging(
            "INFO",
            log_dir=log_dir,
            fmt="json",
            stream=console,
            max_bytes=int(max_bytes),
            backup_count=int(backups),
            buffer_bytes=int(buffer_bytes),
        )
        app = ObservabilityMiddleware(_hello, store=MetricsStore(), access_log=True)
        logger = get_logger("worker")
        Path(log_dir, f"ready-{number}").touch()
        go = Path(log_dir, "go")
        deadline = time.monotonic() + 60
        while not go.exists():
            if time.monotonic() > deadline:
                return 2
            threading.Event().wait(0.005)
        environ_base = {
            "REQUEST_METHOD": "GET",
            "QUERY_STRING": "",
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "80",
            "REMOTE_ADDR": "127.0.0.1",
            "wsgi.url_scheme": "http",
        }
        for seq in range(total):
            if seq % 2 == 0:
                logger.info("worker %d line %d", number, seq, extra={"worker": number, "seq": seq})
            else:
                environ = dict(environ_base, PATH_INFO=f"/w/{number}/{seq}")
                body = app(environ, lambda status, headers, exc_info=None: None)
                try:
                    for _chunk in body:
                        pass
                finally:
                    body.close()  # type: ignore[attr-defined]
        logging_shutdown()
    return 0


def logging_shutdown() -> None:
    """Flush and close every handler before the console file closes (atexit would, too)."""
    import logging

    logging.shutdown()


if __name__ == "__main__":
    sys.exit(main())
