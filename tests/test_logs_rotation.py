"""Rotating log files: size limit, backup count, and many processes writing at once
(subprocesses and real gunicorn workers): no line lost, split, interleaved or duplicated."""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import subprocess
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import stop_process, wait_until

from wsgi_observe import logs
from wsgi_observe.logs import configure_logging, get_logger
from wsgi_observe.logs.files import Sink, Target

WORKER = Path(__file__).with_name("_log_worker.py")


@pytest.fixture(autouse=True)
def _no_log_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """No LOG_DIR: these tests pass ``log_dir`` themselves."""
    monkeypatch.delenv("LOG_DIR", raising=False)


def _log_files(log_dir: Path, name: str = "application.log") -> list[Path]:
    """The live file and its numbered backups, oldest first."""
    backups = sorted(
        (path for path in log_dir.glob(f"{name}.*") if path.suffix[1:].isdigit()),
        key=lambda path: int(path.suffix[1:]),
        reverse=True,
    )
    return [*backups, log_dir / name]


def _parse_all(files: list[Path]) -> list[dict[str, Any]]:
    """Every line of ``files`` as JSON; a split or interleaved line fails here."""
    parsed = []
    for path in files:
        data = path.read_bytes()
        assert not data or data.endswith(b"\n"), f"{path.name} ends in a partial line"
        for number, line in enumerate(data.splitlines(), 1):
            try:
                parsed.append(json.loads(line))
            except ValueError:
                pytest.fail(f"{path.name}:{number} is not one JSON object: {line[:200]!r}")
    return parsed


def test_files_rotate_at_max_bytes_and_keep_backup_count(tmp_path: Path) -> None:
    """application.log rotates before passing max_bytes and keeps only backup_count backups."""
    configure_logging(
        "INFO",
        log_dir=tmp_path,
        fmt="json",
        stream=io.StringIO(),
        max_bytes=2_000,
        backup_count=3,
        buffer_bytes=0,
    )
    logger = get_logger("rotate")
    for seq in range(200):
        logger.info("line %d", seq, extra={"seq": seq})
    logs.flush()
    names = sorted(path.name for path in tmp_path.glob("application.log*"))
    assert names == [
        "application.log",
        "application.log.1",
        "application.log.2",
        "application.log.3",
    ]
    for path in _log_files(tmp_path):
        assert path.stat().st_size <= 2_000
    kept = [line["seq"] for line in _parse_all(_log_files(tmp_path))]
    assert kept == list(range(200 - len(kept), 200))  # the newest lines, in order


def test_a_process_follows_a_rotation_done_by_another(tmp_path: Path) -> None:
    """When another writer renamed the file away, the next flush reopens the new one."""
    configure_logging("INFO", log_dir=tmp_path, fmt="json", stream=io.StringIO(), buffer_bytes=0)
    logger = get_logger("follow")
    logger.info("before")
    live = tmp_path / "application.log"
    live.rename(tmp_path / "application.log.1")  # what another process's rotation does
    logger.info("after")
    assert [line["message"] for line in _parse_all([live])] == ["after"]
    assert [line["message"] for line in _parse_all([tmp_path / "application.log.1"])] == ["before"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "buffer_bytes",
    [pytest.param(0, id="line-by-line"), pytest.param(logs.BUFFER_BYTES, id="buffered")],
)
def test_concurrent_processes_lose_split_or_duplicate_no_line(
    tmp_path: Path, buffer_bytes: int
) -> None:
    """4 processes x 10,000 numbered lines through 200 KB rotations: each line once, whole."""
    workers, count, max_bytes, backups = 4, 10_000, 200_000, 400
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                str(tmp_path),
                str(number),
                str(count),
                str(max_bytes),
                str(backups),
                str(buffer_bytes),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for number in range(workers)
    ]
    try:
        wait_until(
            lambda: all((tmp_path / f"ready-{n}").exists() for n in range(workers)), timeout=30
        )
        (tmp_path / "go").touch()
        for process in processes:
            _out, err = process.communicate(timeout=120)
            assert process.returncode == 0, err.decode(errors="replace")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()

    files = _log_files(tmp_path)
    assert len(files) > 20, "expected many rotations"
    assert len(files) <= backups, "backups ran out: the test would lose lines by design"
    seen: Counter[tuple[int, int]] = Counter()
    for line in _parse_all(files):
        if line["logger"] == "worker":
            seen[(line["worker"], line["seq"])] += 1
        else:
            assert line["logger"] == "wsgi_observe.access"
            _, _, worker, seq = line["path"].split("/")
            seen[(int(worker), int(seq))] += 1
    duplicated = [key for key, times in seen.items() if times > 1]
    assert duplicated == []
    missing = {(w, s) for w in range(workers) for s in range(count)} - set(seen)
    assert sorted(missing)[:10] == []
    assert len(seen) == workers * count


_GUNICORN_APP = """
import logging, os
from wsgi_observe import configure_logging, wrap

configure_logging("INFO", log_dir=os.environ["TEST_LOG_DIR"], fmt="json",
                  max_bytes=20_000, backup_count=200)
logging.getLogger("app").info("loaded before fork in %d", os.getpid())

def hello(environ, start_response):
    logging.getLogger("app").info("serving %s", environ["PATH_INFO"])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]

application = wrap(hello)
"""


def _get(port: int, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("X-Request-ID", "")
    finally:
        connection.close()


@pytest.mark.slow
def test_gunicorn_workers_share_rotating_files_without_losing_lines(tmp_path: Path) -> None:
    """Preloaded gunicorn workers (forked after logging was set up) log every request once."""
    log_dir = tmp_path / "logs"
    (tmp_path / "gunicorn_app.py").write_text(_GUNICORN_APP)
    stderr_path = tmp_path / "gunicorn.err"
    env = {
        **os.environ,
        "TEST_LOG_DIR": str(log_dir),
        "WSGI_OBSERVE_ACCESS_LOG": "true",
        "PYTHONPATH": str(tmp_path),
    }
    env.pop("LOG_LEVEL", None)
    with open(stderr_path, "wb") as stderr:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "python:wsgi_observe.gunicorn",
                "--preload",
                "--workers",
                "4",
                "--bind",
                "127.0.0.1:0",
                "--chdir",
                str(tmp_path),
                "gunicorn_app:application",
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
        )
    try:
        port_seen: list[int] = []

        def listening() -> bool:
            match = re.search(rb"Listening at: http://127\.0\.0\.1:(\d+)", stderr_path.read_bytes())
            if match:
                port_seen.append(int(match.group(1)))
            return bool(match) or server.poll() is not None

        wait_until(listening, timeout=30, explain=lambda: stderr_path.read_text(errors="replace"))
        assert port_seen, stderr_path.read_text(errors="replace")
        port = port_seen[0]
        paths = [f"/r/{n}" for n in range(400)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(lambda path: _get(port, path), paths))
        assert all(status == 200 for status, _ in results)
        ids = [request_id for _, request_id in results]
        assert len(set(ids)) == len(ids)
    finally:
        stop_process(server, timeout=30)

    lines = _parse_all(_log_files(log_dir))
    access = [line for line in lines if line["logger"] == "wsgi_observe.access"]
    assert sorted(line["path"] for line in access) == sorted(paths)
    assert sorted(line["request_id"] for line in access) == sorted(ids)
    serving = Counter(line["message"] for line in lines if line["message"].startswith("serving"))
    assert serving == Counter(f"serving {path}" for path in paths)
    loaded = [line for line in lines if line["message"].startswith("loaded before fork")]
    assert len(loaded) == 1, "a line buffered before the fork must be written exactly once"
    assert len({request_id.rsplit("-", 1)[0] for request_id in ids}) > 1, "one prefix per worker"


class _HeldTarget(Target):
    """A target whose write() holds until released, as a slow disk or a full pipe does."""

    name = "held"

    def __init__(self) -> None:
        self.writing = threading.Event()
        self.release = threading.Event()
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writing.set()
        self.release.wait(10)
        self.written.append(data)


def test_flush_waits_for_a_write_another_thread_has_started() -> None:
    """flush() returns once the lines have reached the targets, also when another thread (the
    flusher) had already taken them and was still writing: before, it returned at once and a
    caller that read the file next found it short."""
    target = _HeldTarget()
    sink = Sink([target], 1 << 16)
    try:
        sink.write(b'{"n":1}')  # queued without its newline: the flush adds it
        other = threading.Thread(target=sink.flush)
        other.start()
        assert target.writing.wait(10)  # the other thread holds the lines, mid-write
        returned = threading.Event()
        caller = threading.Thread(target=lambda: (sink.flush(), returned.set()))
        caller.start()
        assert not returned.wait(0.3), "flush() returned before the write in progress ended"
        target.release.set()
        assert returned.wait(10)
        assert target.written == [b'{"n":1}\n']
        other.join(10)
        caller.join(10)
    finally:
        target.release.set()
        sink.close()
