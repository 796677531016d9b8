"""A tiny Sentry sink on 127.0.0.1: accepts envelopes, counts and discards them.

Run as ``python -m benchmarks.sink``: prints ``{"port": N}`` on stdout, serves until its
stdin closes (the parent went away), ``--max-seconds`` pass, or it is terminated.
``GET /count`` answers the number of envelopes received. The DSN to use is
``http://public@127.0.0.1:N/1``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_received = 0
_lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without this, each answer waits ~40 ms for the
    # client's delayed ACK, sentry-sdk's queue overflows and drops events, and the run
    # measures less work than a real Sentry would cause.
    disable_nagle_algorithm = True

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        global _received
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        elif self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                self.rfile.read(size + 2)
                if size == 0:
                    break
        with _lock:
            _received += 1
        self._answer(b"{}")

    def do_GET(self) -> None:
        self._answer(json.dumps({"envelopes": _received}).encode())

    def log_message(self, format: str, *args: object) -> None:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    print(json.dumps({"port": server.server_address[1]}), flush=True)

    def _watch_stdin() -> None:
        sys.stdin.read()  # returns at EOF: the parent closed our stdin or died
        server.shutdown()

    threading.Thread(target=_watch_stdin, daemon=True).start()
    timer = threading.Timer(args.max_seconds, server.shutdown)
    timer.daemon = True
    timer.start()
    server.serve_forever(poll_interval=0.2)
    server.server_close()


if __name__ == "__main__":
    main()
