"""A bounded soak of the shared multi-process state under faults: the figures a report needs.

Runs a real gunicorn (our config module, gthread workers recycled by ``max_requests``)
serving a wrapped hello app, and at the same time:

- client threads send a fixed number of requests: most to templated paths
  (``/api/leads/<n>``), some to a unique random path each (a flood of names past
  ``max_endpoints``);
- scraper threads read ``/metrics`` without pause, noting every answer's status and total;
- a killer sends SIGKILL to a random worker at regular moments;
- half-way, hostile files are planted in the state directory (a FIFO and a link named like
  a worker's table, a table whose key cannot be hashed, a header with a bad pid).

Everything is bounded in count and time and stops by itself; every process is stopped by
its pid. It prints one JSON document: requests sent / answered / counted, scrapes and scrape
errors, counters that went down, endpoints, state files and archive size, worker RSS, and
whether the master survived::

    .venv/bin/python benchmarks/soak.py --requests 60000 --kills 20 --seconds 900

A request that got no answer (its worker was killed mid-request) is not expected to count;
one that got an answer is.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()
    except (OSError, ValueError, http.client.HTTPException):
        return 0, b""  # no answer: the worker was killed mid-request


def _workers(master: int) -> list[int]:
    import psutil

    try:
        return [child.pid for child in psutil.Process(master).children()]
    except psutil.Error:
        return []


def _rss_mb(pids: list[int]) -> list[float]:
    import psutil

    out = []
    for pid in pids:
        try:
            out.append(round(psutil.Process(pid).memory_info().rss / 2**20, 1))
        except psutil.Error:
            continue
    return out


def _plant_hostile_files(state: Path) -> list[str]:
    """Files a broken or hostile process could leave; what a scrape must survive."""
    planted = []
    fifo = state / f"w-{os.urandom(16).hex()}.keys"
    os.mkfifo(fifo)
    planted.append("fifo-named-like-a-table")
    link = state / f"w-{os.urandom(16).hex()}.keys"
    link.symlink_to("/etc/hostname")
    planted.append("symlink-named-like-a-table")
    bad = os.urandom(16).hex()
    header = json.dumps({"id": bad, "pid": 4242, "role": "worker"}).encode()
    (state / f"w-{bad}.keys").write_bytes(header + b'\n[0,"c","ep",["x"],"GET","2xx"]\n')
    (state / f"w-{bad}.vals").write_bytes((10**6).to_bytes(8, "little"))
    planted.append("unhashable-key")
    bad_pid = os.urandom(16).hex()
    header = json.dumps({"id": bad_pid, "pid": "12; rm -rf /", "role": "worker"}).encode()
    (state / f"w-{bad_pid}.keys").write_bytes(header + b'\n[0,"s","ep","/admin/forged"]\n')
    (state / f"w-{bad_pid}.vals").write_bytes((10**6).to_bytes(8, "little"))
    planted.append("non-integer-pid")
    return planted


def soak(options: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="wsgi_observe-soak-"))
    state = work / "state"
    state.mkdir(mode=0o700)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "WSGI_OBSERVE_STATE_DIR": str(state),
        "WSGI_OBSERVE_MAX_ENDPOINTS": str(options.max_endpoints),
        "LOG_DIR": str(work / "logs"),
    }
    log = open(work / "gunicorn.log", "wb")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:wsgi_observe.gunicorn",
            "-k",
            "gthread",
            "--threads",
            "4",
            "-w",
            str(options.workers),
            "--max-requests",
            str(options.max_requests),
            "--max-requests-jitter",
            str(options.max_requests // 10),
            "-b",
            f"127.0.0.1:{port}",
            "benchmarks.gunicorn_apps:wrapped",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=log,
    )
    deadline = time.monotonic() + options.seconds
    lock = threading.Lock()
    figures: dict[str, Any] = {
        "sent": 0,
        "answered": 0,
        "no_answer": 0,
        "scrapes": 0,
        "scrape_errors": 0,
        "scrape_error_statuses": {},
        "kills": 0,
    }
    totals: list[tuple[float, float, int]] = []  # (started, ended, total)
    rng = random.Random(options.seed)
    plan = [
        f"/p/{''.join(rng.choice(string.ascii_lowercase) for _ in range(10))}"
        if rng.random() < options.flood
        else f"/api/leads/{rng.randrange(10_000)}"
        for _ in range(options.requests)
    ]
    items = iter(plan)
    finished = threading.Event()
    planted: list[str] = []
    try:
        while _get(base + "/health/live", 1.0)[0] != 200:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("gunicorn did not start: see " + str(work / "gunicorn.log"))
            time.sleep(0.1)

        def client() -> None:
            while time.monotonic() < deadline:
                with lock:
                    path = next(items, None)
                    if path is None:
                        return
                    figures["sent"] += 1
                status, _ = _get(base + path)
                with lock:
                    figures["answered" if status == 200 else "no_answer"] += 1

        def scraper() -> None:
            while not finished.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                status, body = _get(base + "/metrics")
                ended = time.monotonic()
                with lock:
                    figures["scrapes"] += 1
                    if status != 200:
                        # 0: no answer at all (the worker answering it was killed); any
                        # other status is an error of ours.
                        figures["scrape_errors"] += 1
                        codes = figures["scrape_error_statuses"]
                        key = "no answer" if status == 0 else str(status)
                        codes[key] = codes.get(key, 0) + 1
                        continue
                    total = json.loads(body)["application"]["requests"]["total"]
                    totals.append((started, ended, total))

        def killer() -> None:
            # Kills spread evenly over the requests (not over time: a run's speed varies).
            marks = [
                options.requests * (k + 1) // (options.kills + 1) for k in range(options.kills)
            ]
            for mark in marks:
                while not finished.is_set() and figures["sent"] < mark:
                    if time.monotonic() > deadline:
                        return
                    time.sleep(0.01)
                if finished.is_set():
                    return
                victims = _workers(server.pid)
                if victims:
                    os.kill(rng.choice(victims), signal.SIGKILL)
                    with lock:
                        figures["kills"] += 1

        threads = [threading.Thread(target=client) for _ in range(options.clients)]
        threads += [threading.Thread(target=scraper) for _ in range(options.scrapers)]
        threads.append(threading.Thread(target=killer))
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads[: options.clients]):
            if not planted and figures["sent"] >= options.requests // 2:
                planted = _plant_hostile_files(state)
            time.sleep(0.2)
        finished.set()
        for thread in threads:
            thread.join(60)
        # Settle: the last requests' close() and the last sweeps.
        counted = -1
        settle_deadline = time.monotonic() + 30
        while time.monotonic() < settle_deadline:
            status, body = _get(base + "/metrics")
            if status == 200:
                doc = json.loads(body)
                counted = doc["application"]["requests"]["total"]
                if counted == figures["answered"]:
                    break
            time.sleep(0.5)
        status, body = _get(base + "/metrics")
        doc = json.loads(body) if status == 200 else {}
        ordered = sorted(totals)
        decreases = 0
        best = -1
        by_end = sorted(totals, key=lambda t: t[1])
        position = 0
        for started, _ended, total in ordered:
            while position < len(by_end) and by_end[position][1] < started:
                best = max(best, by_end[position][2])
                position += 1
            if total < best:
                decreases += 1
        names = doc.get("endpoints", {})
        figures.update(
            {
                "counted": counted,
                "counted_minus_answered": counted - figures["answered"],
                "decreases": decreases,
                "endpoints": len(names),
                "overflow_requests": names.get("<overflow>", {}).get("requests", 0),
                "max_endpoints": options.max_endpoints,
                "state_files": sorted(p.name for p in state.iterdir()),
                "archive_bytes": (state / "archive.json").stat().st_size
                if (state / "archive.json").exists()
                else 0,
                "worker_rss_mb": _rss_mb(_workers(server.pid)),
                "master_alive": server.poll() is None,
                "hostile_files_planted": planted,
                "seconds": round(options.seconds - (deadline - time.monotonic()), 1),
            }
        )
        figures["state_files"] = {
            "tables": sum(1 for n in figures["state_files"] if n.endswith(".keys")),
            "other": [n for n in figures["state_files"] if not n.startswith("w-")],
        }
        return figures
    finally:
        finished.set()
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=5)
        for pid in _workers(server.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()
        if not options.keep:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--scrapers", type=int, default=2)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--max-requests", type=int, default=1500)
    parser.add_argument("--max-endpoints", type=int, default=500)
    parser.add_argument("--flood", type=float, default=0.2, help="share of unique random paths")
    parser.add_argument("--seconds", type=float, default=600.0, help="hard bound on the run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    options = parser.parse_args(argv)
    print(json.dumps(soak(options), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
