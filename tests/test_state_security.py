"""The state directory is attack surface: refused when others control it, never followed
through a link, and every byte read back from it is input, not trusted data."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import orjson
import pytest
from conftest import ROOT

from wsgi_observe import metrics, multiprocess
from wsgi_observe.config import Config
from wsgi_observe.metrics import MetricsStore
from wsgi_observe.multiprocess import merge, statedir
from wsgi_observe.multiprocess.table import WorkerTable

NOBODY = 65534
VAR = statedir.ENV_STATE_DIR


@pytest.fixture
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """This test process starts unshared, with a throwaway process-wide store."""
    monkeypatch.setattr(multiprocess, "_process", multiprocess._Process())
    monkeypatch.setattr(metrics, "_process_store", MetricsStore())


def _private(path):
    path.mkdir(mode=0o700)
    return path


@pytest.mark.parametrize(
    ("make", "says"),
    [
        pytest.param(lambda p: p / "missing", "directory does not exist", id="missing"),
        pytest.param(
            lambda p: (p / "file").write_text("x") and p / "file",
            "is a regular file, not a directory",
            id="regular-file",
        ),
        pytest.param(
            lambda p: (p / "link").symlink_to(_private(p / "real")) or p / "link",
            "is a symbolic link, not a directory",
            id="symlink",
        ),
        pytest.param(
            lambda p: os.mkfifo(p / "fifo") or p / "fifo", "is a FIFO, not a directory", id="fifo"
        ),
        pytest.param(
            lambda p: (p / "open").mkdir() or (p / "open").chmod(0o777) or p / "open",
            "writable by group or others (mode 777)",
            id="world-writable",
        ),
        pytest.param(
            lambda p: (p / "group").mkdir() or (p / "group").chmod(0o770) or p / "group",
            "writable by group or others (mode 770)",
            id="group-writable",
        ),
        pytest.param(
            lambda p: (
                (p / "theirs").mkdir(mode=0o700)
                or os.chown(p / "theirs", NOBODY, NOBODY)
                or p / "theirs"
            ),
            f"owned by uid {NOBODY}",
            id="other-owner",
        ),
    ],
)
def test_a_state_dir_others_control_is_refused_with_one_line(tmp_path, make, says):
    """A given state directory that is not a private directory of ours is refused, saying why."""
    path = make(tmp_path)
    with pytest.raises(statedir.StateDirError) as caught:
        statedir.check_private(str(path), variable=VAR)
    message = str(caught.value)
    assert message.startswith(f"{VAR}={str(path)!r}: ") and says in message
    assert "\n" not in message


def test_a_rendezvous_folder_planted_by_another_user_is_never_used(
    tmp_path, monkeypatch, fresh_process
):
    """Workers that meet without a master's help refuse a per-user folder someone else made
    first (mode 0777, their uid): no file is created there, /metrics says why."""
    monkeypatch.setattr(statedir, "_runtime_root", lambda: str(tmp_path))
    planted = tmp_path / f"wsgi_observe-{os.geteuid()}"
    planted.mkdir()
    planted.chmod(0o777)
    os.chown(planted, NOBODY, NOBODY)
    assert multiprocess.join(Config.from_env({})) is None
    assert list(planted.iterdir()) == []
    problem = multiprocess.state()["problem"]
    assert f"owned by uid {NOBODY}" in problem


def test_a_symlinked_server_folder_is_refused(tmp_path, monkeypatch, fresh_process):
    """The per-server folder under the per-user one is never followed through a link."""
    monkeypatch.setattr(statedir, "_runtime_root", lambda: str(tmp_path))
    base = _private(tmp_path / f"wsgi_observe-{os.geteuid()}")
    victim = _private(tmp_path / "victim")
    master = statedir.identity_of(os.getppid())
    assert master is not None
    (base / f"{master[0]}-{master[1]}").symlink_to(victim)
    assert multiprocess.join(Config.from_env({})) is None
    assert "symbolic link" in multiprocess.state()["problem"]
    assert list(victim.iterdir()) == []


def test_no_file_is_ever_written_through_a_planted_symlink(tmp_path, fresh_process):
    """Links named like every file we write (owner, lock, names, archive) never lead us to
    truncate or write the file they point at: 0.1's root gunicorn truncated one."""
    state = _private(tmp_path / "state")
    victim = tmp_path / "victim"
    victim.write_text("precious")
    for name in ("owner.json", "names", "archive.json", ".names.lock", "alerts.lock"):
        (state / name).symlink_to(victim)
    config = Config.from_env({}, state_dir=str(state), max_endpoints=10)
    store = MetricsStore()
    table = multiprocess.join(config)
    assert table is not None  # the owner link was replaced by a file of ours, never followed
    try:
        names = multiprocess._process.names
        assert names is not None
        with pytest.raises(OSError):
            names.admit("/x")  # "names" is a link: refused, the caller keeps its own cap
        store.use_table(table)
        child = WorkerTable(str(state))
        child.close()  # a dead process: the next sweep archives it, through a new file
        assert merge.sweep(str(state)) == 1
    finally:
        table.close()
    assert victim.read_text() == "precious"
    assert not (state / "archive.json").is_symlink()
    assert not (state / "owner.json").is_symlink()


def _table_with(state, lines: list[bytes], values: list[int]) -> str:
    """A dead process's files with these key lines (after its header) and values."""
    worker_id = os.urandom(16).hex()
    header = orjson.dumps({"id": worker_id, "pid": 4242, "role": "worker"})
    (state / f"w-{worker_id}.keys").write_bytes(b"\n".join([header, *lines]) + b"\n")
    data = b"".join(v.to_bytes(8, "little", signed=True) for v in values)
    (state / f"w-{worker_id}.vals").write_bytes(data)
    return worker_id


# Each case: key lines, then which keys may reach the archive (the well-formed lines before
# the first bad one; nothing after a bad line is trusted).
HOSTILE_LINES = [
    pytest.param([b'[0,"c","ep",["x"],"GET","2xx"]'], set(), id="unhashable-key"),
    pytest.param([b'[0,"c","ep"]'], set(), id="short-key"),
    pytest.param([b'[0,"h","ep","/x","12"]'], set(), id="string-bucket"),
    pytest.param([b'[0,"h","ep","/x",999999]'], set(), id="bucket-out-of-range"),
    pytest.param(
        [b'[0,"s","ep","/x"]', b'[0,"e","ep","/x"]', b'[1,"c","ep","/x","GET","2xx"]'],
        {("s", "ep", "/x")},
        id="slot-twice",
    ),
    pytest.param([b'[5,"s","ep","/x"]'], set(), id="slot-skipped"),
    pytest.param([b'[0,"c","xx","/x","GET","2xx"]'], set(), id="unknown-space"),
    pytest.param([b'["0","s","ep","/x"]'], set(), id="string-slot"),
    pytest.param([b"\x00\xff not json"], set(), id="garbage"),
    pytest.param([b'{"id":"other"}'], set(), id="second-header"),
]


@pytest.mark.parametrize(("lines", "trusted"), HOSTILE_LINES)
def test_malformed_state_files_are_skipped_and_never_archived(tmp_path, lines, trusted, caplog):
    """Every malformed record is skipped with a warning: the merge and the archive keep only
    well-formed counts (0.1 answered 500 forever, and copied them into the archive)."""
    state = _private(tmp_path / "state")
    good = WorkerTable(str(state))
    store = MetricsStore(good)
    store.record_call("good.fn", 1_000_000, failed=False)
    _table_with(state, lines, [10**6] * 8)
    with caplog.at_level("WARNING", logger="wsgi_observe.multiprocess"):
        first = multiprocess.collect_snapshot(str(state))
        second = multiprocess.collect_snapshot(str(state))
    assert first.functions["good.fn"].count == 1 and second.functions["good.fn"].count == 1
    assert set(first.endpoints) <= {"/x"} and all(s.count == 0 for s in first.endpoints.values())
    archive = json.loads((state / "archive.json").read_text())
    assert {tuple(key) for key, _ in archive["pairs"] if key[1] == "ep"} == trusted
    warnings = [r.getMessage() for r in caplog.records]
    assert any("skipping" in text for text in warnings), warnings
    good.close()


def test_a_header_with_a_bad_pid_is_skipped(tmp_path):
    """A header whose pid is not a positive integer makes the file unreadable, not a 500."""
    state = _private(tmp_path / "state")
    worker_id = os.urandom(16).hex()
    header = orjson.dumps({"id": worker_id, "pid": "12; rm -rf /", "role": "worker"})
    (state / f"w-{worker_id}.keys").write_bytes(header + b'\n[0,"s","ep","/x"]\n')
    (state / f"w-{worker_id}.vals").write_bytes((5).to_bytes(8, "little"))
    snapshot = multiprocess.collect_snapshot(str(state))
    assert "/x" not in snapshot.endpoints or snapshot.endpoints["/x"].sum_ns == 0


def test_a_fifo_or_link_named_like_a_state_file_never_blocks_a_scrape(tmp_path):
    """A FIFO under a table's name would block open() forever: it is never opened for
    reading without O_NONBLOCK, the scrape answers, and the sweep removes it."""
    state = _private(tmp_path / "state")
    fifo_id, link_id = os.urandom(16).hex(), os.urandom(16).hex()
    os.mkfifo(state / f"w-{fifo_id}.keys")
    os.mkfifo(state / f"w-{fifo_id}.vals")
    (state / f"w-{link_id}.keys").symlink_to("/etc/passwd")
    good = WorkerTable(str(state))
    MetricsStore(good).record_call("fn", 1000, failed=False)
    code = (
        "import sys; from wsgi_observe import multiprocess; "
        "s = multiprocess.collect_snapshot(sys.argv[1]); print(s.functions['fn'].count)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(state)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=30,  # 0.1 hung here forever
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"
    left = {p.name for p in state.iterdir() if p.name.startswith("w-")}
    assert left == {f"w-{good.id}.keys", f"w-{good.id}.vals"}
    good.close()


def test_an_archive_with_bad_records_keeps_only_good_ones(tmp_path, caplog):
    """Malformed archive records are skipped with a warning; good ones still count."""
    state = _private(tmp_path / "state")
    document = {
        "merged": ["not-an-id", 5],
        "pairs": [
            [["c", "ep", "/ok", "GET", "2xx"], 7],
            [["c", "ep", ["x"], "GET", "2xx"], 1],
            [["h", "ep", "/ok", "9"], 1],
            [["c", "ep", "/neg", "GET", "2xx"], -5],
            "garbage",
        ],
    }
    (state / "archive.json").write_bytes(orjson.dumps(document))
    with caplog.at_level("WARNING", logger="wsgi_observe.multiprocess"):
        snapshot = multiprocess.collect_snapshot(str(state))
    assert {name: s.count for name, s in snapshot.endpoints.items()} == {"/ok": 7}
    assert any("malformed" in r.getMessage() for r in caplog.records)


def test_two_servers_on_one_state_dir_the_second_is_refused(gunicorn, tmp_path):
    """A second gunicorn given the same WSGI_OBSERVE_STATE_DIR refuses with one line and
    exit code 2; the first one's counts stay whole (0.1 wiped them)."""
    state = _private(tmp_path / "state")
    env = {"WSGI_OBSERVE_STATE_DIR": str(state)}
    first = gunicorn("tests.apps.basic:app", "-w", "2", env=env)
    for _ in range(100):
        assert first.get("/api/leads/1")[0] == 200
    second = gunicorn("tests.apps.basic:app", "-w", "2", env=env, ready=False)
    assert second.process.wait(timeout=30) == 2
    output = second.output()
    assert "already used by another running server" in output
    assert f"master pid {first.process.pid}" in output and "Traceback" not in output
    totals = {json.loads(first.get("/metrics")[2])["application"]["requests"]["total"]}
    totals |= {json.loads(first.get("/metrics")[2])["application"]["requests"]["total"]}
    assert totals == {100}


def test_the_state_dir_of_a_stopped_server_is_taken_over(tmp_path, fresh_process):
    """A directory whose owner is gone is cleared of that run's files and claimed."""
    state = _private(tmp_path / "state")
    (state / "owner.json").write_bytes(orjson.dumps({"pid": 999999, "start": 1}))
    stale = WorkerTable(str(state))
    stale.close()
    (state / "keep.txt").write_text("not ours")
    master = statedir.identity_of(os.getpid())
    assert master is not None
    assert statedir.claim(str(state), master) is True
    names = {p.name for p in state.iterdir()}
    assert "keep.txt" in names and not any(n.startswith("w-") for n in names)
    assert json.loads((state / "owner.json").read_text()) == {"pid": master[0], "start": master[1]}
    assert stat.S_IMODE((state / "owner.json").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "planted",
    [
        pytest.param(b"{not json", id="garbage"),
        pytest.param(b'{"status": "fine", "timestamp": "2099-01-01T00:00:00.000Z"}', id="status"),
        pytest.param(b'{"status": "healthy", "timestamp": 5}', id="timestamp"),
        pytest.param(b"[1, 2]", id="not-an-object"),
    ],
)
def test_a_malformed_shared_readiness_result_is_ignored(tmp_path, fresh_process, planted):
    """The readiness result shared in the state directory is read as input: one that is not
    of the shape /health/ready writes is ignored, and this process's own result stands."""
    state = _private(tmp_path / "state")
    table = multiprocess.join(Config.from_env({}, state_dir=str(state)))
    assert table is not None
    try:
        own = {"status": "healthy", "timestamp": "2026-01-01T00:00:00.000Z", "checks": {}}
        (state / multiprocess.READINESS).write_bytes(planted)
        assert multiprocess.latest_readiness(own) is own
        newer = {**own, "status": "degraded", "timestamp": "2026-01-01T00:00:01.000Z"}
        multiprocess.publish_readiness(newer)
        assert multiprocess.latest_readiness(own) == newer
    finally:
        table.close()
