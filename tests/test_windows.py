"""Recent windows: the ring of snapshots, the windows and series it gives, ``?window=``."""

from __future__ import annotations

import gc
import json
import logging
import os
import threading
import time
import weakref
import zlib
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

import orjson
import pytest
from conftest import wait_until
from wsgi_client import call

from wsgi_observe import kpis
from wsgi_observe import windows as windows_module
from wsgi_observe.alerts import AlertMonitor, error_rate_alert
from wsgi_observe.config import Config, ConfigError
from wsgi_observe.exposition.json import json_document
from wsgi_observe.histograms import bucket_index
from wsgi_observe.kpidata import KpiFamily, KpiSeries, kpis_delta
from wsgi_observe.metrics import MetricsStore, SeriesData, Snapshot
from wsgi_observe.middleware import ObservabilityMiddleware
from wsgi_observe.windows import (
    WindowError,
    Windows,
    decode,
    encode,
    parse_window,
    window_snapshot,
)


class Clock:
    """Wall-clock seconds that move only when told to."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Source:
    """Cumulative numbers that a test adds to: what a middleware's snapshot() would give."""

    def __init__(self) -> None:
        self.endpoints: dict[str, SeriesData] = {}
        self.functions: dict[str, SeriesData] = {}
        self.started_at = time.time()

    def add(
        self, name: str, fast: int = 0, slow: int = 0, errors: int = 0, *, space: str = "ep"
    ) -> None:
        """``fast`` requests of 1 ms and ``slow`` ones of 3 s, ``errors`` of them 5xx."""
        target = self.endpoints if space == "ep" else self.functions
        old = target.get(name) or SeriesData()
        hist = dict(old.hist)
        for us, count in ((1_000, fast), (3_000_000, slow)):
            if count:
                hist[bucket_index(us)] = hist.get(bucket_index(us), 0) + count
        by = dict(old.by)
        ok = fast + slow - errors
        for label, count in ((("GET", "2xx"), ok), (("GET", "5xx"), errors)):
            if count:
                by[label] = by.get(label, 0) + count
        target[name] = SeriesData(
            count=old.count + fast + slow,
            errors=old.errors + errors,
            sum_ns=old.sum_ns + fast * 1_000_000 + slow * 3_000_000_000,
            hist=hist,
            by=by,
        )

    def snapshot(self) -> Snapshot:
        return Snapshot(dict(self.endpoints), dict(self.functions), 0, self.started_at, time.time())


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    failed = "fail" in environ["PATH_INFO"]
    start_response(
        "500 Internal Server Error" if failed else "200 OK", [("Content-Type", "text/plain")]
    )
    return [b"x"]


def observed(clock: Clock, **overrides: Any) -> ObservabilityMiddleware:
    return ObservabilityMiddleware(
        hello, store=MetricsStore(), access_log=False, log_handlers=False, clock=clock, **overrides
    )


def send(middleware: ObservabilityMiddleware, path: str, times: int = 1) -> None:
    for _ in range(times):
        call(middleware, path)


def metrics(middleware: ObservabilityMiddleware, query: str = "", **kwargs: Any) -> Any:
    response = call(middleware, "/metrics", query=query, **kwargs)
    return response.code, json.loads(response.body) if response.body else None


@pytest.fixture
def ring_log() -> Iterator[list[logging.LogRecord]]:
    """Records of the wsgi_observe.windows logger."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("wsgi_observe.windows")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


# Parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("1m", 60.0, id="1m"),
        pytest.param("5m", 300.0, id="5m"),
        pytest.param("15m", 900.0, id="15m"),
        pytest.param("90s", 90.0, id="90s"),
        pytest.param("300", 300.0, id="bare-seconds"),
        pytest.param("2.5", 2.5, id="fraction"),
        pytest.param("1h", 3600.0, id="1h"),
        pytest.param(" 5m ", 300.0, id="spaces"),
    ],
)
def test_parse_window_accepts_durations_and_seconds(text: str, seconds: float) -> None:
    """``1m``, ``5m``, ``15m``, seconds with or without ``s``, and hours are durations."""
    assert parse_window(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0",
        "0m",
        "-1m",
        "abc",
        "1e3",
        "inf",
        "nan",
        "5 m",
        "1d",
        "1m1",
        "9" * 40,
        "\uff15m",
        "1.m",
    ],
)
def test_parse_window_refuses_anything_else_with_one_line(text: str) -> None:
    """Anything but a positive duration raises WindowError (a ValueError) in one line."""
    with pytest.raises(WindowError) as caught:
        parse_window(text)
    assert isinstance(caught.value, ValueError)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 200


# Windows over the ring ------------------------------------------------------------------------


def test_a_window_is_exactly_what_happened_in_it_percentiles_included() -> None:
    """A burst of slow requests in the last minutes shows in the window's p50 and error
    rate, while the numbers since start still look healthy."""
    clock, source = Clock(), Source()
    ring = Windows(source.snapshot, clock=clock)
    source.add("/api/leads", fast=1000)
    for _ in range(30):  # five healthy minutes, a snapshot every 10 s
        clock.now += 10
        ring.tick()
    source.add("/api/leads", slow=40, errors=10)
    source.add("/api/new", fast=5)
    clock.now += 10
    recent = ring.window_snapshot_for(60)
    leads = recent.endpoints["/api/leads"]
    assert (leads.count, leads.errors, leads.by) == (
        40,
        10,
        {("GET", "2xx"): 30, ("GET", "5xx"): 10},
    )
    assert leads.hist == {bucket_index(3_000_000): 40}
    assert recent.endpoints["/api/new"].count == 5
    assert recent.window_s == 60
    document = json_document(recent, service="s", version="1")
    assert document["window_seconds"] == 60
    assert document["application"]["requests"]["total"] == 45
    assert document["endpoints"]["/api/leads"]["p50"] == pytest.approx(3.0, rel=0.01)
    everything = json_document(source.snapshot(), service="s", version="1")
    assert everything["endpoints"]["/api/leads"]["p50"] == pytest.approx(0.001, rel=0.01)
    assert "window_seconds" not in everything


def test_the_baseline_is_the_snapshot_nearest_the_window_start() -> None:
    """With a snapshot every 10 s, a window of W seconds starts within 5 s of W ago and
    says exactly how long it is."""
    clock, source = Clock(), Source()
    ring = Windows(source.snapshot, clock=clock)
    for _ in range(20):
        source.add("/a", fast=1)
        clock.now += 10
        ring.tick()
    clock.now += 4  # 4 s after the last snapshot
    recent = ring.window_snapshot_for(60)
    assert recent.window_s == 64  # the snapshot 64 s ago, not the one 74 s ago
    assert recent.endpoints["/a"].count == 6
    clock.now += 3  # 7 s after: the nearest snapshot to 60 s ago is 57 s old
    assert ring.window_snapshot_for(60).window_s == 57


def test_a_server_younger_than_the_window_shows_everything_since_start() -> None:
    """Before the ring reaches back far enough, the window starts at the server's start,
    when every counter was zero, and says so."""
    clock, source = Clock(), Source()
    ring = Windows(source.snapshot, clock=clock)
    source.started_at = clock.now - 30  # started 30 s ago
    source.add("/a", fast=7)
    ring.tick()
    clock.now += 20
    recent = ring.window_snapshot_for(300)
    assert recent.endpoints["/a"].count == 7
    assert recent.window_s == pytest.approx(50, abs=0.5)
    assert recent.started_at == source.started_at  # the uptime is still the server's


def test_a_counter_that_went_down_counts_from_zero() -> None:
    """A series whose counts went down (a reset) shows its current counts, never negatives."""
    before, now = Source(), Source()
    before.add("/a", fast=100, errors=3)
    now.add("/a", fast=5)
    delta = window_snapshot(now.snapshot(), before.snapshot())
    assert delta.endpoints["/a"].count == 5 and delta.endpoints["/a"].errors == 0


def test_idle_endpoints_and_functions_drop_out_of_the_window() -> None:
    """Only what moved during the window is listed; timed functions subtract too."""
    before, now = Source(), Source()
    for source in (before, now):
        source.add("/idle", fast=10)
        source.add("reports.build", fast=2, space="fn")
    now.add("/busy", fast=3)
    now.add("reports.build", slow=1, space="fn")
    delta = window_snapshot(now.snapshot(), before.snapshot())
    assert list(delta.endpoints) == ["/busy"]
    assert delta.functions["reports.build"].count == 1
    assert delta.functions["reports.build"].hist == {bucket_index(3_000_000): 1}


@pytest.mark.parametrize(
    ("seconds", "says"),
    [
        pytest.param(901, "longer than the 15m kept", id="too-long"),
        pytest.param(5, "shorter than the 10s between snapshots", id="too-short"),
        # Whole hours read as asked for ("1h"), not as "60m".
        pytest.param(3600, "window 1h is longer than the 15m kept", id="hours"),
    ],
)
def test_a_window_the_ring_cannot_give_raises_window_error(seconds: float, says: str) -> None:
    """Longer than kept, or shorter than the interval: WindowError with one line."""
    ring = Windows(Source().snapshot)
    with pytest.raises(WindowError, match=says):
        ring.window_snapshot_for(seconds)


def test_series_gives_what_happened_in_each_step() -> None:
    """series(60, 300): one Snapshot per minute of the last five, oldest first, each with
    that minute's requests; the timestamps are the ends of the steps (whole minutes)."""
    clock, source = Clock(), Source()
    clock.now = 1_800_000_000.0  # a whole minute
    ring = Windows(source.snapshot, clock=clock)
    source.started_at = clock.now - 1
    ring.tick()
    for minute in range(6):
        for _ in range(6):
            source.add("/a", fast=minute + 1)
            clock.now += 10
            ring.tick()
    points = ring.series(step_s=60, span_s=300)
    assert [round(clock.now - end) for end, _ in points] == [240, 180, 120, 60, 0]
    assert [step.endpoints["/a"].count for _, step in points] == [12, 18, 24, 30, 36]
    assert all(step.window_s == 60 for _, step in points)


def test_series_of_a_young_server_leaves_out_the_steps_before_it_started() -> None:
    """Two minutes after start, a 15-minute series has two steps, not fifteen."""
    clock, source = Clock(), Source()
    clock.now = 1_800_000_000.0
    ring = Windows(source.snapshot, clock=clock)
    source.started_at = clock.now
    ring.tick()
    for _ in range(12):
        source.add("/a", fast=1)
        clock.now += 10
        ring.tick()
    points = ring.series()
    assert [step.endpoints["/a"].count for _, step in points] == [6, 6]
    clock.now += 25  # the newest step runs from the last whole minute to now
    source.add("/a", fast=2)
    points = ring.series()
    assert [step.endpoints["/a"].count for _, step in points] == [6, 6, 2]
    assert points[-1][1].window_s == 25


def test_series_of_a_server_started_late_in_a_minute_has_its_first_steps() -> None:
    """A server started 45 s into a minute: its first (partial) step is there at once, and
    after the next whole minute the steps still hold every request since the start (the
    newest step and the first one used to be left out until the next minute)."""
    clock, source = Clock(), Source()
    clock.now = 1_800_000_045.0  # 45 s after a whole minute
    ring = Windows(source.snapshot, clock=clock)
    source.started_at = clock.now
    ring.tick()
    source.add("/a", fast=3)
    clock.now += 5
    points = ring.series()
    assert [step.endpoints["/a"].count for _, step in points] == [3]
    assert points[-1][1].window_s == 5
    for _ in range(3):  # on to 25 s after the next whole minute
        clock.now += 10
        source.add("/a", fast=1)
        ring.tick()
    points = ring.series()
    assert sum(step.endpoints["/a"].count for _, step in points if "/a" in step.endpoints) == 6
    assert sum(step.window_s or 0 for _, step in points) == pytest.approx(35)


def test_series_reuses_the_steps_that_are_over(monkeypatch: pytest.MonkeyPatch) -> None:
    """A step between two ring entries is computed once: the next call (a dashboard
    refreshing) only computes the step that is still running."""
    clock, source = Clock(), Source()
    clock.now = 1_800_000_000.0
    ring = Windows(source.snapshot, clock=clock)
    source.started_at = clock.now - 1
    for _ in range(91):
        source.add("/a", fast=1)
        ring.tick()
        clock.now += 10
    first = ring.series()
    computed: list[Optional[Snapshot]] = []
    original = windows_module.window_snapshot

    def counting(
        now: Snapshot, before: Optional[Snapshot], window_s: Optional[float] = None
    ) -> Snapshot:
        computed.append(before)
        return original(now, before, window_s)

    monkeypatch.setattr(windows_module, "window_snapshot", counting)
    again = ring.series()
    assert len(computed) == 1  # only the running step
    assert [(t, s.endpoints) for t, s in again] == [(t, s.endpoints) for t, s in first]


# The ring: bounded, evicting, shared -------------------------------------------------------


@pytest.mark.parametrize("where", ["memory", "state-dir"])
def test_the_ring_stays_bounded_and_drops_the_oldest(where: str, tmp_path: Path) -> None:
    """A thousand intervals later the ring holds span / interval + 2 entries at most, the
    newest ones, and still gives the longest window it keeps."""
    clock, source = Clock(), Source()
    directory = str(tmp_path) if where == "state-dir" else None
    ring = Windows(
        source.snapshot, interval_s=10, span_s=120, clock=clock, directory=lambda: directory
    )
    for _ in range(1000):
        source.add("/a", fast=1)
        clock.now += 10
        ring.tick()
    times = ring._ring().times()
    assert len(times) <= ring.max_entries == 14
    assert times[-1] == pytest.approx(clock.now, abs=0.001)
    assert times[0] >= clock.now - 131
    if directory is not None:
        assert len([n for n in os.listdir(directory) if n.startswith("window-")]) == len(times)
    recent = ring.window_snapshot_for(120)
    assert recent.endpoints["/a"].count == 12
    assert recent.window_s == pytest.approx(120, abs=0.001)
    assert ring.size_bytes() > 0


def test_a_snapshot_is_taken_once_per_interval_whoever_offers_it(tmp_path: Path) -> None:
    """Two processes' rings on one state directory: the first offer in an interval writes
    an entry, the other's finds it there; both give the same window."""
    clock, source = Clock(), Source()
    first, second = (
        Windows(source.snapshot, clock=clock, directory=lambda: str(tmp_path)) for _ in range(2)
    )
    assert first.tick() is True
    assert second.tick() is False
    source.add("/a", fast=3)
    clock.now += 10
    assert second.tick() is True
    assert first.tick() is False
    source.add("/a", fast=4)
    clock.now += 60
    one, other = first.window_snapshot_for(60), second.window_snapshot_for(60)
    assert one.endpoints["/a"].count == other.endpoints["/a"].count == 4
    assert one.window_s == other.window_s == pytest.approx(60, abs=0.001)


def test_the_writer_holds_the_ring_lock(tmp_path: Path) -> None:
    """While another process holds the ring's lock, an offer writes nothing (never waits)."""
    import fcntl

    ring = Windows(Source().snapshot, directory=lambda: str(tmp_path))
    fd = os.open(tmp_path / "window.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert ring.tick() is False
    finally:
        os.close(fd)
    assert ring.tick() is True


def test_entries_round_trip() -> None:
    """An entry decodes to the numbers it was made from: endpoints, functions, labels."""
    source = Source()
    source.add("/a", fast=3, slow=2, errors=1)
    source.add("/b/<int:id>", fast=1)
    source.add("jobs.run", fast=4, space="fn")
    snapshot = source.snapshot()
    t, back = decode(encode(snapshot, 1234.5))
    assert t == 1234.5 and back.taken_at == 1234.5
    assert back.endpoints == snapshot.endpoints and back.functions == snapshot.functions
    assert back.started_at == snapshot.started_at


def test_kpis_are_windowed_counters_and_distributions_subtract_gauges_stay() -> None:
    """A window's KPIs are what happened in it: counters and distributions (exact HDR
    counts) subtract, gauges show their value now; they survive the ring's encoding."""
    clock, store = Clock(), MetricsStore()
    leads = kpis.counter("leads_created_total", "Leads.", labels=("source",), store=store)
    score = kpis.distribution("lead_score", "Scores.", "points", store=store)
    open_customers = kpis.gauge("open_customers", "Open.", store=store)
    ring = Windows(store.snapshot, clock=clock)
    leads.labels(source="web").inc(5)
    score.observe(10)
    open_customers.set(3)
    ring.tick()
    back = decode(encode(store.snapshot(), 1.0))[1].kpis
    assert back["leads_created"].series[("web",)].value == 5
    assert (
        back["lead_score_points"].series[()].hist
        == store.snapshot().kpis["lead_score_points"].series[()].hist
    )
    assert "open_customers" not in back  # a gauge needs no past
    clock.now += 60
    leads.labels(source="web").inc(2)
    leads.labels(source="ads").inc(1)
    score.observe(90)
    score.observe(90)
    open_customers.set(7)
    recent = ring.window_snapshot_for(60)
    assert {k: v.value for k, v in recent.kpis["leads_created"].series.items()} == {
        ("web",): 2,
        ("ads",): 1,
    }
    distribution = recent.kpis["lead_score_points"].series[()]
    assert distribution.count == 2 and distribution.sum == 180
    assert recent.kpis["open_customers"].series[()].value == 7
    document = json_document(recent, service="s", version="1")
    assert "kpis" in document


def _entry(header: Any, gaps: tuple[int, ...] = (), counts: tuple[int, ...] = ()) -> bytes:
    """An entry as encode() lays it out, with whatever header and buckets a test plants."""
    head = orjson.dumps(header)
    body = b"WOR1" + len(head).to_bytes(4, "little") + head
    body += array("H", gaps).tobytes() + array("q", counts).tobytes()
    return zlib.compress(body)


_GOOD = {"v": 1, "t": 0, "started_at": 0, "endpoints": [], "functions": []}


def _one(
    t: float, row: list[Any], gaps: tuple[int, ...] = (), counts: tuple[int, ...] = ()
) -> bytes:
    return _entry({**_GOOD, "t": t, "endpoints": [row]}, gaps, counts)


@pytest.mark.parametrize(
    "plant",
    [
        pytest.param(lambda path, t: path.write_bytes(b"garbage"), id="not-compressed"),
        pytest.param(lambda path, t: path.write_bytes(zlib.compress(b"[1, 2]")), id="not-an-entry"),
        pytest.param(lambda path, t: path.write_bytes(_entry([1, 2])), id="header-not-an-object"),
        pytest.param(
            lambda path, t: path.write_bytes(_entry({**_GOOD, "t": t, "v": 2})), id="other-version"
        ),
        pytest.param(
            lambda path, t: path.write_bytes(_one(t, ["/a", -5, 0, 0, [], 0])), id="negative-count"
        ),
        pytest.param(
            lambda path, t: path.write_bytes(_one(t, ["/a", 1, 0, 0, [], 1], (3400,), (1,))),
            id="bucket-out-of-range",
        ),
        pytest.param(
            lambda path, t: path.write_bytes(_one(t, ["/a", 2, 0, 0, [], 2], (5, 0), (1, 1))),
            id="buckets-not-ascending",
        ),
        pytest.param(
            lambda path, t: path.write_bytes(_one(t, ["/a", 1, 0, 0, [], 1], (5,), (-1,))),
            id="negative-bucket",
        ),
        pytest.param(
            lambda path, t: path.write_bytes(_one(t, ["/a", 3, 0, 0, [], 3], (5,), (3,))),
            id="fewer-buckets-than-said",
        ),
        pytest.param(
            lambda path, t: path.write_bytes(_one(t, ["/a", 3, 0, 0, [], 1], (5, 6), (3, 1))),
            id="more-buckets-than-said",
        ),
        pytest.param(
            lambda path, t: path.write_bytes(_one(t, ["/a", 1, 0, 0, [["GET", 7, 1]], 0])),
            id="label-not-text",
        ),
        pytest.param(
            lambda path, t: path.write_bytes(_one(t, [7, 1, 0, 0, [], 0])), id="name-not-text"
        ),
        pytest.param(
            lambda path, t: path.write_bytes(_entry({**_GOOD, "t": t + 5})), id="time-not-name"
        ),
        pytest.param(
            lambda path, t: path.write_bytes(
                _entry(
                    {
                        **_GOOD,
                        "t": t,
                        "kpis": [["bad name!", "counter", "", "", [], "", [], 10, []]],
                    }
                )
            ),
            id="kpi-bad-name",
        ),
        pytest.param(
            lambda path, t: path.write_bytes(
                _entry(
                    {
                        **_GOOD,
                        "t": t,
                        "kpis": [
                            ["leads", "counter", "", "", ["a"], "", [], 10, [[["x"], -3, [], 0]]]
                        ],
                    }
                )
            ),
            id="kpi-negative-counter",
        ),
        pytest.param(
            lambda path, t: path.write_bytes(
                _entry(
                    {
                        **_GOOD,
                        "t": t,
                        "kpis": [
                            [
                                "leads",
                                "counter",
                                "",
                                "",
                                ["a"],
                                "",
                                [],
                                10,
                                [[["x", "y"], 3, [], 0]],
                            ]
                        ],
                    }
                )
            ),
            id="kpi-labels-not-declared",
        ),
        pytest.param(
            lambda path, t: path.write_bytes(
                _entry(
                    {
                        **_GOOD,
                        "t": t,
                        "kpis": [
                            [
                                "s",
                                "distribution",
                                "",
                                "",
                                [],
                                "",
                                [],
                                10,
                                [[[], 0, [[99999, 1]], 1]],
                            ]
                        ],
                    }
                )
            ),
            id="kpi-bucket-out-of-range",
        ),
        pytest.param(
            lambda path, t: path.write_bytes(zlib.compress(b" " * (65 * 1024 * 1024))),
            id="zip-bomb",
        ),
        pytest.param(lambda path, t: os.mkfifo(path), id="fifo"),
        pytest.param(lambda path, t: path.symlink_to("/etc/passwd"), id="symlink"),
        pytest.param(lambda path, t: path.mkdir(), id="directory"),
    ],
)
def test_a_hostile_ring_entry_is_ignored(
    plant: Callable[[Path, float], None], tmp_path: Path, ring_log: list[logging.LogRecord]
) -> None:
    """An entry in the state directory is input: anything but the exact shape is skipped
    with a warning (never followed, never blocking, never a 500), and the window falls back
    to the server's start."""
    clock, source = Clock(), Source()
    source.started_at = clock.now - 100
    ring = Windows(source.snapshot, clock=clock, directory=lambda: str(tmp_path))
    source.add("/a", fast=9)
    t = round(clock.now - 60)
    plant(tmp_path / f"window-{t * 1000}", t)
    recent = ring.window_snapshot_for(60)
    assert recent.endpoints["/a"].count == 9  # since start: the planted entry was not used
    assert recent.window_s == pytest.approx(100, abs=1)  # (the clock's start is wall time)
    assert any("ignoring the ring entry" in r.getMessage() for r in ring_log)


def test_names_that_are_not_entries_are_left_alone(tmp_path: Path) -> None:
    """Files named like entries but not quite (``window-x``, ``window-1.5``) are not read."""
    for name in ("window-x", "window-1.5", "window-", "windows-1000"):
        (tmp_path / name).write_bytes(b"junk")
    ring = Windows(Source().snapshot, directory=lambda: str(tmp_path))
    assert ring._ring().times() == []


# /metrics?window= ---------------------------------------------------------------------------


def test_metrics_window_gives_the_document_of_the_last_minutes() -> None:
    """``?window=1m`` is /metrics over the last minute: requests, errors, percentiles, with
    ``window_seconds`` and ``window_start``; ``?window=15m`` reaches back to the start."""
    clock = Clock()
    middleware = observed(clock)
    send(middleware, "/api/old", 10)
    clock.now += 10
    assert metrics(middleware)[0] == 200  # a scrape takes the due snapshot
    send(middleware, "/api/new", 4)
    send(middleware, "/api/fail", 1)
    clock.now += 60
    code, document = metrics(middleware, "window=1m")
    assert code == 200
    assert document["window_seconds"] == 60
    assert document["application"]["requests"]["total"] == 5
    assert document["application"]["requests"]["errors"] == 1
    assert sorted(document["endpoints"]) == ["/api/fail", "/api/new"]
    assert document["window_start"] < document["timestamp"]
    code, document = metrics(middleware, "window=15m")
    assert document["application"]["requests"]["total"] == 15
    code, document = metrics(middleware, "window=60")
    assert document["application"]["requests"]["total"] == 5
    assert "window_seconds" not in metrics(middleware)[1]


@pytest.mark.parametrize(
    ("query", "headers", "says"),
    [
        pytest.param("window=abc", {}, "window must be a duration", id="malformed"),
        pytest.param("window=", {}, "window must be a duration", id="empty"),
        pytest.param("window=-5m", {}, "window must be a duration", id="negative"),
        pytest.param("window=16m", {}, "longer than the 15m kept", id="too-long"),
        pytest.param("window=99999999h", {}, "longer than the 15m kept", id="huge"),
        pytest.param("window=2s", {}, "shorter than the 10s", id="too-short"),
        pytest.param("window=5m&format=prometheus", {}, "JSON format", id="prometheus"),
        pytest.param("window=5m&format=openmetrics", {}, "JSON format", id="openmetrics"),
        pytest.param(
            "window=5m",
            {"Accept": "application/openmetrics-text; version=1.0.0"},
            "JSON format",
            id="openmetrics-by-accept",
        ),
    ],
)
def test_metrics_window_that_cannot_be_had_is_a_400_with_one_line(
    query: str, headers: dict[str, str], says: str
) -> None:
    """Malformed, too long, too short or not JSON: 400 with one line, never a 500."""
    middleware = observed(Clock())
    response = call(middleware, "/metrics", query=query, headers=headers)
    assert response.code == 400
    message = json.loads(response.body)["error"]
    assert says in message and "\n" not in message
    assert response.header("Content-Type") == "application/json"
    head = call(middleware, "/metrics", "HEAD", query=query, headers=headers)
    assert (head.code, head.body) == (400, b"")


def test_metrics_window_needs_the_token() -> None:
    """``?window=`` is behind ``metrics_token`` like /metrics: 401 first, whatever the window."""
    middleware = observed(Clock(), metrics_token="s3cret")
    assert call(middleware, "/metrics", query="window=abc").code == 401
    assert call(middleware, "/metrics", query="window=5m").code == 401
    ok = call(middleware, "/metrics", query="window=5m", headers={"Authorization": "Bearer s3cret"})
    assert ok.code == 200 and "window_seconds" in json.loads(ok.body)


def test_windows_can_be_turned_off() -> None:
    """``window_span=0``: no ring, no thread, and ``?window=`` says windows are off."""
    middleware = observed(Clock(), window_span=0)
    send(middleware, "/a")
    assert middleware.windows not in windows_module._ticker.rings
    response = call(middleware, "/metrics", query="window=5m")
    assert response.code == 400 and b"off" in response.body


# Never on the request path ---------------------------------------------------------------


def test_snapshots_are_never_taken_on_the_request_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests never take a snapshot: the ticker thread and scrapes do."""
    threads: list[int] = []
    original = Windows.tick

    def tick(self: Windows, snapshot: Optional[Snapshot] = None) -> bool:
        threads.append(threading.get_ident())
        return original(self, snapshot)

    monkeypatch.setattr(Windows, "tick", tick)
    middleware = ObservabilityMiddleware(
        hello,
        store=MetricsStore(),
        access_log=False,
        log_handlers=False,
        window_interval=0.05,
        window_span=10,
    )
    try:
        calls_before = len(threads)
        send(middleware, "/a", 200)
        wait_until(lambda: len(threads) > calls_before + 2)  # the ticker is running meanwhile
        in_requests = [t for t in threads if t == threading.get_ident()]
        assert in_requests == []  # none on this (the requests') thread
        scraped = len(threads)
        metrics(middleware)
        assert threading.get_ident() in threads[scraped:]  # a scrape offers one (no app here)
    finally:
        middleware.windows.stop()


def test_the_ticker_takes_snapshots_and_lets_go_of_a_dropped_middleware() -> None:
    """A middleware's first request starts the ticker; the ring fills every interval; a
    middleware nobody holds any more is collected, not kept alive by the ticker."""
    middleware = ObservabilityMiddleware(
        hello,
        store=MetricsStore(),
        access_log=False,
        log_handlers=False,
        window_interval=0.05,
        window_span=10,
    )
    send(middleware, "/a")
    ring = weakref.ref(middleware.windows)
    wait_until(lambda: len(ring()._ring().times()) >= 3)  # type: ignore[union-attr]
    ref = weakref.ref(middleware)
    del middleware
    wait_until(lambda: gc.collect() is not None and ref() is None)


def test_config_reads_the_window_settings() -> None:
    """WSGI_OBSERVE_WINDOW_INTERVAL and _SPAN take durations; bad ones fail in one line."""
    config = Config.from_env(
        {"WSGI_OBSERVE_WINDOW_INTERVAL": "5s", "WSGI_OBSERVE_WINDOW_SPAN": "1h"}
    )
    assert (config.window_interval, config.window_span) == (5.0, 3600.0)
    assert Config.from_env({"WSGI_OBSERVE_WINDOW_SPAN": "0"}).window_span == 0
    for env, says in (
        ({"WSGI_OBSERVE_WINDOW_INTERVAL": "0"}, "WSGI_OBSERVE_WINDOW_INTERVAL='0'"),
        ({"WSGI_OBSERVE_WINDOW_SPAN": "soon"}, "WSGI_OBSERVE_WINDOW_SPAN='soon'"),
        ({"WSGI_OBSERVE_WINDOW_SPAN": "5s"}, "WSGI_OBSERVE_WINDOW_SPAN=5s"),
    ):
        with pytest.raises(ConfigError, match=says) as caught:
            Config.from_env(env)
        assert "\n" not in str(caught.value)


def test_config_window_span_zero_any_spelling_and_clash_names_both() -> None:
    """Every spelling of zero turns windows off (the error said "0 or more" to "0.00"), and a
    span the interval does not fit names both variables: with only a tiny interval set, the
    default span is not the one to blame alone."""
    for zero in ("0", "00", "0.00", "0s", "0m", " 0h ", "0.0"):
        assert Config.from_env({"WSGI_OBSERVE_WINDOW_SPAN": zero}).window_span == 0, zero
    assert Config(window_span=0.0).window_span == 0
    with pytest.raises(ConfigError) as caught:
        Config.from_env({"WSGI_OBSERVE_WINDOW_INTERVAL": "0.05"})
    message = str(caught.value)
    assert "WSGI_OBSERVE_WINDOW_SPAN=900s" in message
    assert "WSGI_OBSERVE_WINDOW_INTERVAL=0.05s" in message
    assert "\n" not in message
    for bad in ("0x", "-0", "0.0000001", "00000000000"):
        with pytest.raises(ConfigError, match="WSGI_OBSERVE_WINDOW_SPAN="):
            Config.from_env({"WSGI_OBSERVE_WINDOW_SPAN": bad})


# The alerts use the same ring --------------------------------------------------------------


def test_alerts_use_the_middlewares_ring() -> None:
    """An AlertMonitor of a middleware reads its windows from the middleware's ring (the one
    behind ``?window=``), and its checks offer that ring its snapshots."""
    clock = Clock()
    middleware = observed(clock)
    monitor = AlertMonitor(middleware, [error_rate_alert()])
    assert monitor.windows is middleware.windows
    send(middleware, "/api/fail", 25)
    assert [alert.value for alert in monitor.check()] == [1.0]
    assert middleware.windows._ring().times()[-1] == clock.now
    for _ in range(40):  # 400 s of snapshots
        clock.now += 10
        middleware.windows.tick()
    send(middleware, "/api/ok", 100)
    assert monitor.check() == []  # the failures are older than the 5-minute window
    assert not monitor.firing
    # A window the middleware's ring does not keep: the monitor keeps a ring of its own.
    assert AlertMonitor(middleware, window_s=3600).windows is not middleware.windows


# Helper S: the ring's files under attack and after a SIGKILL -------------------------------


def test_an_entry_from_the_future_that_cannot_be_dropped_does_not_make_every_offer_write(
    tmp_path: Path,
) -> None:
    """A directory planted under an entry's name far in the future can't be unlinked: it
    must not make every scrape write an entry (the ring would then hold seconds, not 15
    minutes); the entries of the past decide when one is due."""
    clock, source = Clock(), Source()
    (tmp_path / f"window-{round(clock.now + 10**6) * 1000}").mkdir()
    ring = Windows(source.snapshot, clock=clock, directory=lambda: str(tmp_path))
    assert ring.tick() is True
    clock.now += 1
    assert [ring.tick() for _ in range(3)] == [False, False, False]
    clock.now += 10
    assert ring.tick() is True
    assert len([t for t in ring._ring().times() if t <= clock.now + 1]) == 2


def test_a_temporary_file_left_by_a_killed_writer_is_removed(tmp_path: Path) -> None:
    """A process SIGKILLed between creating an entry's temporary file and renaming it
    leaves ``.tmp-<pid>-<hex>``: the next entry written removes it once a minute old (a
    fresh one may be another process's write in progress; other names are left alone)."""
    clock, source = Clock(), Source()
    stale = tmp_path / ".tmp-4194303-0123456789ab"
    fresh = tmp_path / ".tmp-4194304-0123456789ab"
    other = tmp_path / ".tmp-alerts-12"
    for path in (stale, fresh, other):
        path.write_bytes(b"x" * 1000)
    old = time.time() - 120
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    ring = Windows(source.snapshot, clock=clock, directory=lambda: str(tmp_path))
    assert ring.tick() is True
    assert not stale.exists()
    assert fresh.exists() and other.exists()


def test_the_ring_lock_belongs_to_the_state_directorys_owner(tmp_path: Path) -> None:
    """Made by root (a gunicorn master that drops privileges), ``window.lock`` is handed to
    the directory's owner like every other state file, or the workers could never take it
    and write an entry. (As another user the directory is that user's already.)"""
    owner = os.geteuid() or 65534  # root hands it to nobody
    os.chown(tmp_path, owner, -1)
    ring = Windows(Source().snapshot, clock=Clock(), directory=lambda: str(tmp_path))
    assert ring.tick() is True
    assert (tmp_path / "window.lock").stat().st_uid == owner
    for entry in tmp_path.glob("window-*"):
        assert entry.stat().st_uid == owner


def _series(count: int, errors: int = 0, bucket: int = 100) -> SeriesData:
    return SeriesData(
        count,
        errors,
        count * 1000,
        by={("GET", "2xx"): count - errors, **({("GET", "5xx"): errors} if errors else {})},
        sorted_hist=([bucket], [count]),
    )


def _snapshot(endpoints: dict[str, SeriesData], at: float) -> Snapshot:
    return Snapshot(endpoints, {}, 0, 0.0, at)


def test_a_window_stays_exact_when_the_names_past_the_cap_change() -> None:
    """Past ``max_endpoints`` the merged view of the workers keeps the busiest names and
    folds the rest into ``<overflow>``; which ones can change between two snapshots (C
    became busier than B). The window must count what happened, not a name's whole history:
    here C's 60 requests, and nothing for A and B, which had none."""
    overflow = "<overflow>"
    before = _snapshot(
        {"/a": _series(100), "/b": _series(50, bucket=200), overflow: _series(10, 1, 300)},
        1000.0,
    )
    # C (in <overflow> before) got 60 requests; B had none and is folded now.
    now = _snapshot(
        {
            "/a": _series(100),
            "/c": _series(70, 1, 300),
            overflow: _series(50, bucket=200),
        },
        1300.0,
    )
    window = window_snapshot(now, before)
    total = sum(series.count for series in window.endpoints.values())
    assert total == 60
    assert sum(series.errors for series in window.endpoints.values()) == 0
    assert "/a" not in window.endpoints
    (shown,) = window.endpoints.values()
    assert shown.sorted_hist() == ([300], [60])


def test_a_window_keeps_a_new_name_by_its_name_while_nothing_is_folded() -> None:
    """Below the cap (no ``<overflow>`` on either side) a name new in the window is shown
    under its own name, with everything it counted."""
    before = _snapshot({"/a": _series(100)}, 1000.0)
    now = _snapshot({"/a": _series(130), "/new": _series(5)}, 1300.0)
    window = window_snapshot(now, before)
    assert {name: s.count for name, s in window.endpoints.items()} == {"/a": 30, "/new": 5}


def test_a_window_stays_exact_when_part_of_a_name_moves_into_overflow() -> None:
    """The archive of exited workers folds its names past the cap into ``<overflow>``: a
    name's count can go down by what moved. The window counts the 5 requests that
    happened, not the name's remaining history plus what moved."""
    overflow = "<overflow>"
    before = _snapshot({"/a": _series(100), overflow: _series(10, bucket=300)}, 1000.0)
    moved = SeriesData(55, 0, 55_000, by={("GET", "2xx"): 55}, sorted_hist=([100, 300], [40, 15]))
    now = _snapshot({"/a": _series(60), overflow: moved}, 1300.0)
    window = window_snapshot(now, before)
    assert {name: s.count for name, s in window.endpoints.items()} == {overflow: 5}
    assert window.endpoints[overflow].sorted_hist() == ([300], [5])


def test_a_kpi_window_stays_exact_when_the_label_sets_past_the_cap_change() -> None:
    """KPIs too: past ``max_series`` the merged view keeps the busiest label sets (here
    ``c`` overtook ``b``, and ``a`` lost part of its count to the archive's ``<overflow>``);
    the window counts the 65 orders and 3 scores that happened, not whole histories."""
    overflow = ("<overflow>",)

    def counter(values: dict[tuple[str, ...], int]) -> KpiFamily:
        series = {labels: KpiSeries(value=v) for labels, v in values.items()}
        return KpiFamily("orders", "counter", "h", "", ("source",), "", (), series, 2)

    def scores(hists: dict[tuple[str, ...], dict[int, int]]) -> KpiFamily:
        series = {
            labels: KpiSeries(hist=h, sum=float(sum(h.values()))) for labels, h in hists.items()
        }
        return KpiFamily("score", "distribution", "h", "", ("source",), "", (), series, 2)

    before = {
        "orders": counter({("a",): 100, ("b",): 50, overflow: 10}),
        "score": scores({("a",): {5: 10}, ("b",): {6: 4}, overflow: {7: 1}}),
    }
    now = {
        "orders": counter({("a",): 80, ("c",): 75, overflow: 70}),  # c +65; 20 of a moved
        "score": scores({("a",): {5: 10}, ("c",): {7: 3}, overflow: {6: 4}}),  # c +2
    }
    delta = kpis_delta(now, before)
    assert sum(one.value for one in delta["orders"].series.values()) == 65
    assert {labels: one.hist for labels, one in delta["score"].series.items() if one.hist} == {
        overflow: {7: 2}
    }


def test_a_ring_lock_held_by_a_parent_thread_does_not_hang_a_forked_child() -> None:
    """A gunicorn master with ``--preload`` may fork a worker while one of its threads (the
    ticker, an alert monitor) is in the middle of a snapshot, holding the ring's lock. The
    child must answer ``?window=`` anyway (it would wait for ever on a lock nobody there
    will release)."""
    import signal

    middleware = observed(Clock())
    send(middleware, "/a")
    held, release = threading.Event(), threading.Event()

    def mid_snapshot() -> None:
        with middleware.windows._lock:
            held.set()
            release.wait(30)

    thread = threading.Thread(target=mid_snapshot)
    thread.start()
    try:
        assert held.wait(10)
        pid = os.fork()
        if pid == 0:  # the child: answer, or be stopped by the alarm
            code = 1
            try:
                signal.alarm(20)
                status, document = metrics(middleware, "window=1m")
                code = 0 if status == 200 and document["window_seconds"] >= 0 else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
        thread.join()
        middleware.windows.stop()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


def test_an_alert_monitor_lock_held_by_a_parent_thread_does_not_hang_a_forked_child() -> None:
    """The same for an alert monitor checking on every scrape: its timer thread in the
    parent (a gunicorn master with ``--preload``) may be mid-check, holding its lock, when
    a worker is forked; the worker's ``/metrics`` must still answer."""
    import signal

    middleware = observed(Clock())
    monitor = AlertMonitor(middleware, [error_rate_alert()]).evaluate_on_scrape()
    send(middleware, "/a")
    held, release = threading.Event(), threading.Event()

    def mid_check() -> None:
        with monitor._lock:
            held.set()
            release.wait(30)

    thread = threading.Thread(target=mid_check)
    thread.start()
    try:
        assert held.wait(10)
        pid = os.fork()
        if pid == 0:  # the child: answer, or be stopped by the alarm
            code = 1
            try:
                signal.alarm(20)
                code = 0 if metrics(middleware)[0] == 200 else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
        thread.join()
        monitor.stop()
        middleware.windows.stop()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
