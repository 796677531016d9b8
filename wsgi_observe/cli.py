"""The command line: ``python -m wsgi_observe demo``, ``... uptimerobot setup`` and
``... export prometheus-rules|grafana-dashboard|alertmanager``."""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import Optional

from ._version import __version__

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("gunicorn") is None:
        print(
            "wsgi-observe demo: gunicorn is not installed (pip install 'wsgi_observe[gunicorn]')",
            file=sys.stderr,
        )
        return 2
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:wsgi_observe.gunicorn",
        "-w",
        str(args.workers),
        "-b",
        f"{args.host}:{args.port}",
        "--access-logfile",
        "-",
        "wsgi_observe.demo:app",
    ]
    print(f"wsgi_observe demo on http://{args.host}:{args.port}  (Ctrl-C stops it)", flush=True)
    print(f"  try: curl -s http://{args.host}:{args.port}/metrics | jq .application", flush=True)
    env = dict(os.environ)
    env.setdefault("LOG_FORMAT", "console")
    # The demo's database, shared by its workers, in a private folder removed at the end.
    folder = tempfile.mkdtemp(prefix="wsgi_observe-demo-")
    env.setdefault("DEMO_DB", os.path.join(folder, "demo.sqlite3"))
    try:
        return _run_until_stopped(command, env)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# What the demo's gunicorn is sent when the demo gets a signal: Ctrl-C stops it at once, a
# TERM gracefully; a hangup (the terminal went away) stops it too, where gunicorn's own
# meaning of SIGHUP would be "reload".
_FORWARD: dict[int, int] = {signal.SIGINT: signal.SIGINT, signal.SIGTERM: signal.SIGTERM}
if hasattr(signal, "SIGHUP"):
    _FORWARD[signal.SIGHUP] = signal.SIGTERM


def _run_until_stopped(command: list[str], env: dict[str, str]) -> int:
    """Run ``command`` and wait for it; a SIGINT, SIGTERM or SIGHUP to this process is passed
    on to it, so the server never outlives the command that started it."""
    received: list[int] = []
    child: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, frame: object) -> None:
        received.append(signum)
        if child and child[0].poll() is None:
            child[0].send_signal(_FORWARD[signum])

    previous = {signum: signal.signal(signum, forward) for signum in _FORWARD}
    try:
        child.append(subprocess.Popen(command, env=env))
        if received:  # a signal came before the child existed
            child[0].send_signal(_FORWARD[received[-1]])
        return child[0].wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if child and child[0].poll() is None:  # only if wait() itself failed
            child[0].kill()
            child[0].wait()


def _uptimerobot(rest: list[str]) -> int:
    from .uptimerobot.command import main as setup_main

    return setup_main(rest)


def _export(rest: list[str]) -> int:
    from .ops.command import main as export_main

    return export_main(rest)


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``wsgi-observe`` and ``python -m wsgi_observe``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "uptimerobot":
        return _uptimerobot(argv[1:])
    if argv and argv[0] == "export":
        return _export(argv[1:])
    parser = argparse.ArgumentParser(prog="wsgi-observe", description="wsgi_observe command line")
    parser.add_argument("--version", action="version", version=f"wsgi_observe {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="serve the demo CRM API under gunicorn")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=5000)
    demo.add_argument("--workers", type=int, default=2)
    commands.add_parser(
        "uptimerobot",
        help="uptimerobot setup [--dry-run] [--api v3|v2]: this app's monitors in UptimeRobot",
    )
    commands.add_parser(
        "export", help="export prometheus-rules|grafana-dashboard|alertmanager [-o FILE] ..."
    )
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    return 2  # pragma: no cover - argparse handles the rest


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
