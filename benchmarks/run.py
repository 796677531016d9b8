"""Run the whole benchmark suite and print one table.

    python benchmarks/run.py            # full: 7 interleaved rounds, gunicorn 6 x 3 s
    python benchmarks/run.py --quick    # CI: 1 round, small counts, < 90 s, asserts nothing

Every in-process configuration runs in its own worker process (inprocess.py); all are
timed in the same run, round after round, in a rotating order, one at a time. Results go
to benchmarks/results/latest.{json,md}, latency.png and profile.txt. The exit status is 1
when a wsgi_observe configuration could not be built or run (its row says "error"; a
missing peer library only makes its row "n/a"), 2 when the suite itself breaks, and with
--strict also 1 when a peer's row errored.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from typing import Any, Optional

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import cpus, http_load, instructions, pipes, report
from benchmarks.inprocess import GROUPS, SUBJECTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
#: Worker groups whose stderr is a pipe the suite drains (the others: a regular file).
PIPED = frozenset({"wo_default_pipe"})
#: Configurations whose bytecodes per request are counted, by function (profile.txt).
BYTECODE_SUBJECTS = (
    "bare",
    "prometheus",
    "wo_metrics",
    "wo_context",
    "wo_default",
    "flask_bare",
    "flask_exporter",
    "flask_wo_metrics",
    "flask_wo_default",
    "django_bare",
    "django_wo_metrics",
)
#: Configurations profiled with cProfile (profile.txt; the first two also in latest.md).
PROFILED = ("wo_metrics", "wo_default", "wo_sentry", "flask_wo_metrics", "flask_wo_default")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class WorkerError(RuntimeError):
    pass


class Worker:
    """One in-process worker (a group of subjects), spoken to by JSON lines."""

    def __init__(self, group: str, opts: dict[str, Any], env: dict[str, str], tmp: str) -> None:
        self.group = group
        # stderr: a regular file, or for the groups in PIPED a pipe drained like a supervisor
        # (systemd, Docker) would (pipes.Tail); the default configuration's console writes
        # every line there.
        self.stderr_path = os.path.join(tmp, f"worker-{group}.err")
        # O_APPEND: a worker that empties its stderr file (inprocess._ConsoleFile) writes
        # from its start again.
        self._stderr_file = None if group in PIPED else open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.inprocess",
                "worker",
                group,
                "--opts",
                json.dumps(opts),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if self._stderr_file is None else self._stderr_file,
            cwd=ROOT,
            env=env,
            text=True,
            bufsize=1,
        )
        self._stderr = pipes.Tail(self.proc.stderr.buffer) if self.proc.stderr else None

    def read(self, timeout_s: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            if not selector.select(timeout_s):
                # Stop it now, so a runaway batch never overlaps another subject's timing.
                self.proc.kill()
                raise WorkerError(f"worker {self.group} gave no answer in {timeout_s:.0f}s")
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerError(f"worker {self.group} died: {self.stderr_tail()}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer and len(answer) == 1:
            raise WorkerError(answer["error"])
        return answer

    def ask(self, timeout_s: float, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(command) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as error:
            raise WorkerError(f"worker {self.group} is gone: {error}") from None
        return self.read(timeout_s)

    def stderr_tail(self) -> str:
        if self._stderr is not None:
            return self._stderr.text()
        try:
            with open(self.stderr_path, "rb") as handle:
                handle.seek(max(0, os.path.getsize(self.stderr_path) - 1500))
                return handle.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write('{"cmd": "exit"}\n')
                self.proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._stderr is not None:
            self._stderr.close()
        if self._stderr_file is not None:
            self._stderr_file.close()


class Sink:
    """The local Sentry sink process (benchmarks/sink.py)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.sink"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=env,
            text=True,
        )
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            if not selector.select(20):
                raise RuntimeError("sentry sink did not start")
        self.port = json.loads(self.proc.stdout.readline())["port"]
        self.dsn = f"http://public@127.0.0.1:{self.port}/1"

    def count(self) -> Optional[int]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/count", timeout=3) as r:
                return int(json.loads(r.read())["envelopes"])
        except Exception:
            return None

    def stop(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def clean_env(tmp: str) -> dict[str, str]:
    """Our environment without anything that would switch wsgi_observe features on."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SENTRY_", "WSGI_OBSERVE_", "LOG_", "UPTIMEROBOT_", "OTEL_"))
    }
    env["LOG_DIR"] = os.path.join(tmp, "logs-default")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONHASHSEED"] = "0"
    env["OTEL_SDK_DISABLED"] = "false"
    return env


# In-process -----------------------------------------------------------------------------


def run_inprocess(args: argparse.Namespace, tmp: str, env: dict[str, str]) -> dict[str, Any]:
    sink: Optional[Sink] = None
    try:
        sink = Sink(env)
    except Exception as error:
        log(f"sentry sink failed ({error}); Sentry rows will be n/a")
    # Every worker on the same CPU (benchmarks.cpus): pinned in the worker, before it builds
    # anything, so every thread it starts is pinned too.
    opts = {"tmp": tmp, "dsn": sink.dsn if sink else None, "cpu": args.pinning["cpu"]}
    workers: dict[str, Worker] = {}
    state: dict[str, dict[str, Any]] = {}  # subject -> {"status", "why", "info", ...}
    owner: dict[str, Worker] = {}
    try:
        wanted = set(args.only.split(",")) if args.only else set(SUBJECTS)
        unknown = wanted - set(SUBJECTS)
        if unknown:
            raise ValueError(f"--only: unknown subjects {sorted(unknown)}")
        for name in SUBJECTS:
            if name not in wanted:
                state[name] = {"status": "n/a", "why": "not selected (--only)"}
        groups = [group for group, names in GROUPS.items() if wanted & set(names)]
        log(f"starting {len(groups)} worker processes")
        for group in groups:
            workers[group] = Worker(group, opts, env, tmp)
        for group, worker in workers.items():
            try:
                answer = worker.read(240.0)["subjects"]
            except Exception as error:
                answer = {name: {"error": str(error)} for name in GROUPS[group]}
            for name, value in answer.items():
                if name not in wanted:
                    continue
                if "ok" in value:
                    state[name] = {"status": "ok", "info": value["ok"]}
                    owner[name] = worker
                elif "na" in value:
                    state[name] = {"status": "n/a", "why": value["na"]}
                else:
                    state[name] = {"status": "error", "why": value["error"]}
        live = [name for name in SUBJECTS if state.get(name, {}).get("status") == "ok"]
        for name in SUBJECTS:
            if state.get(name, {}).get("status") != "ok":
                why = state.get(name, {}).get("why", "not started")
                log(f"{name}: {state.get(name, {}).get('status', 'error')} - {why.strip()[:300]}")

        def fail(name: str, error: Exception) -> None:
            log(f"{name}: error - {error}")
            state[name] = {**state[name], "status": "error", "why": str(error)}
            live.remove(name)

        counts: dict[str, int] = {}
        for name in list(live):
            try:
                counts[name] = owner[name].ask(
                    120.0, cmd="calibrate", subject=name, target_s=args.target_s
                )["n"]
                if args.warmup:
                    owner[name].ask(120.0, cmd="run", subject=name, n=counts[name])
            except Exception as error:
                fail(name, error)
        log(f"calibrated {len(live)} subjects; {args.rounds} round(s) of ~{args.target_s}s each")
        for name in live:
            state[name].update(n=counts[name], wall_us=[], cpu_us=[], kernel_us=[], envelopes=[])
        for round_index in range(args.rounds):
            shift = round_index % max(len(live), 1)
            order = live[shift:] + live[:shift]
            for name in list(order):
                if name not in live:
                    continue
                uses_sink = sink is not None and state[name]["info"].get("uses_sink")
                before = sink.count() if uses_sink else None
                try:
                    result = owner[name].ask(
                        120.0 + 40 * args.target_s, cmd="run", subject=name, n=counts[name]
                    )
                except Exception as error:
                    fail(name, error)
                    continue
                n = result["n"]
                state[name]["wall_us"].append(result["wall_ns"] / n / 1000.0)
                state[name]["cpu_us"].append(result["cpu_ns"] / n / 1000.0)
                state[name]["kernel_us"].append(result.get("kernel_ns", 0) / n / 1000.0)
                if uses_sink and before is not None:
                    after = sink.count()  # type: ignore[union-attr]
                    if after is not None:
                        state[name]["envelopes"].append((after - before) / n)
            log(f"round {round_index + 1}/{args.rounds} done")
        profiles = {}
        for name in PROFILED:
            if name in live:
                try:
                    n = min(counts[name], 100_000 if not args.quick else 10_000)
                    text = owner[name].ask(120.0, cmd="profile", subject=name, n=n)["text"]
                    profiles[name] = {"n": n, "text": text}
                except Exception as error:
                    profiles[name] = {"n": 0, "text": f"profile failed: {error}"}
        opcodes: dict[str, Any] = {}
        for name in BYTECODE_SUBJECTS:
            if name in live:
                try:
                    n = 100 if args.quick else 400
                    opcodes[name] = owner[name].ask(120.0, cmd="bytecodes", subject=name, n=n)
                except Exception as error:
                    opcodes[name] = f"failed: {error}"
        for name in live:
            try:
                state[name]["info"] = owner[name].ask(30.0, cmd="info", subject=name)["info"]
            except Exception:
                pass
        return {
            "subjects": state,
            "profiles": profiles,
            "bytecodes": opcodes,
            "sink": sink.count() if sink else None,
        }
    finally:
        for worker in workers.values():
            worker.stop()
        if sink is not None:
            sink.stop()


# Memory ---------------------------------------------------------------------------------


def run_memory(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("bare", "wrapped"):
        command = [sys.executable, "-m", "benchmarks.memory", "--paths", str(args.paths)]
        if kind == "bare":
            command.append("--bare")
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env, check=False
            )
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
            if not lines:
                raise RuntimeError(f"rc={done.returncode}: {done.stderr[-800:]}")
            out[kind] = json.loads(lines[-1])
        except Exception as error:
            out[kind] = {"error": str(error)}
        log(f"memory {kind}: {out[kind]}")
    # The ring of recent windows: 200 endpoints x a full 15-minute ring (fewer in --quick).
    command = [sys.executable, "-m", "benchmarks.windows"]
    if args.quick:
        command += ["--endpoints", "50", "--repeat", "3"]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env, check=False
        )
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            raise RuntimeError(f"rc={done.returncode}: {done.stderr[-800:]}")
        out["windows"] = json.loads(lines[-1])
    except Exception as error:
        out["windows"] = {"error": str(error)}
    log(f"memory windows: {out['windows']}")
    return out


# HTTP under gunicorn --------------------------------------------------------------------


def run_http(args: argparse.Namespace, tmp: str, env: dict[str, str]) -> dict[str, Any]:
    why = http_load.gunicorn_available()
    if why:
        return {"na": why}
    out: dict[str, Any] = {
        "tool": "wrk" if http_load.have_wrk() else "python-loader",
        "workers": 2,
        "connections": args.connections,
        "seconds": args.http_seconds,
        "rounds": args.http_rounds,
        "notes": [],
    }
    hooks = http_load.Gunicorn.hooks_available()
    servers: list[http_load.Gunicorn] = []
    path = "/api/hello"
    names = ("bare", "wrapped", "default")
    try:
        running: dict[str, http_load.Gunicorn] = {}
        for name in names:
            server_env = dict(env)
            server_env["LOG_DIR"] = os.path.join(tmp, f"logs-gunicorn-{name}")
            use_hooks = hooks and name != "bare"
            if use_hooks:
                server_env["WSGI_OBSERVE_STATE_DIR"] = os.path.join(tmp, f"gunicorn-state-{name}")
                os.makedirs(server_env["WSGI_OBSERVE_STATE_DIR"], exist_ok=True)
            server = http_load.Gunicorn(
                f"benchmarks.gunicorn_apps:{name}",
                workers=2,
                tmp=tmp,
                hooks=use_hooks,
                env=server_env,
            )
            servers.append(server)
            try:
                server.wait_ready(path)
            except RuntimeError as error:
                if not use_hooks:
                    raise
                out["notes"].append(
                    f"gunicorn with -c python:wsgi_observe.gunicorn failed for {name} "
                    f"({str(error)[-300:]}); plain gunicorn used"
                )
                server.stop()
                server_env.pop("WSGI_OBSERVE_STATE_DIR", None)
                server = http_load.Gunicorn(
                    f"benchmarks.gunicorn_apps:{name}",
                    workers=2,
                    tmp=tmp,
                    hooks=False,
                    env=server_env,
                )
                servers.append(server)
                server.wait_ready(path)
            running[name] = server
        wrapped = running["wrapped"]
        out["hooks"] = wrapped.hooks
        if not hooks:
            out["notes"].append("wsgi_observe.gunicorn missing: plain gunicorn (no hooks)")
        log(
            "gunicorn up: "
            + ", ".join(f"{name} {server.url}" for name, server in running.items())
            + f" (hooks: {wrapped.hooks})"
        )
        for server in running.values():  # every worker forked, imported and warm
            http_load.load(server.url + path, 1, args.connections, tmp)
        rps: dict[str, list[float]] = {name: [] for name in names}
        cpu_us: dict[str, list[float]] = {name: [] for name in names}
        errors = dict.fromkeys(names, 0)
        hists = {name: http_load.new_histogram() for name in names}
        for round_index in range(args.http_rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                server = running[name]
                cpu_before = server.workers_cpu_s()
                result = http_load.load(server.url + path, args.http_seconds, args.connections, tmp)
                cpu_after = server.workers_cpu_s()
                if cpu_before is not None and cpu_after is not None and result.requests:
                    cpu_us[name].append((cpu_after - cpu_before) / result.requests * 1e6)
                rps[name].append(result.rps)
                errors[name] += result.errors
                hists[name].add(result.histogram)
                out["tool"] = result.tool
            log(
                f"http round {round_index + 1}/{args.http_rounds}: "
                + ", ".join(f"{name} {rps[name][-1]:.0f} req/s" for name in names)
            )
        out["rps"] = rps
        out["server_cpu_us"] = cpu_us
        out["cpu_ratio_rounds"] = [b / w for w, b in zip(cpu_us["wrapped"], cpu_us["bare"]) if w]
        out["errors"] = errors
        out["ratio_rounds"] = [w / b for w, b in zip(rps["wrapped"], rps["bare"]) if b]
        out["default_ratio_rounds"] = [d / b for d, b in zip(rps["default"], rps["bare"]) if b]
        out["default_cpu_ratio_rounds"] = [
            b / d for d, b in zip(cpu_us["default"], cpu_us["bare"]) if d
        ]
        out["latency"] = {
            name: {
                f"p{p:g}": h.get_value_at_percentile(p) / 1000.0
                for p in (50, 90, 99, 99.9, 99.99, 100)
            }
            for name, h in hists.items()
        }
        out["hists"] = hists
        probes: dict[str, Any] = {}
        for probe in ("/health", "/health/live"):
            result = http_load.load(wrapped.url + probe, args.health_seconds, 2, tmp)
            probes[probe] = {
                "requests": result.requests,
                "errors": result.errors,
                "p50_ms": result.percentile_ms(50),
                "p99_ms": result.percentile_ms(99),
                "max_ms": result.percentile_ms(100),
            }
            log(f"{probe} over HTTP: p99 {probes[probe]['p99_ms']:.3f} ms")
        out["probes"] = probes
        return out
    except Exception as error:
        out["error"] = f"{error}"
        log(f"http: error - {error}")
        return out
    finally:
        for server in servers:
            server.stop()


# Main -----------------------------------------------------------------------------------


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="wsgi_observe benchmark suite")
    parser.add_argument("--quick", action="store_true", help="CI mode: small, 1 round, < 90 s")
    parser.add_argument("--rounds", type=int, help="interleaved in-process rounds (7; quick 1)")
    parser.add_argument("--target-s", type=float, help="seconds per batch (0.25; quick 0.02)")
    parser.add_argument("--http-rounds", type=int, help="gunicorn rounds (6; quick 1)")
    parser.add_argument("--http-seconds", type=int, help="seconds per load run (3; quick 1)")
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="what the table's medians and targets use (default: process CPU)",
    )
    parser.add_argument("--health-seconds", type=int, help="seconds per probe run (3; quick 1)")
    parser.add_argument("--connections", type=int, default=4, help="load connections (4)")
    parser.add_argument("--paths", type=int, default=100_000, help="memory flood (100000)")
    parser.add_argument(
        "--only", help="comma-separated subjects to measure (development; others are n/a)"
    )
    parser.add_argument(
        "--instructions",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="count instructions per request under callgrind (default: full runs, if valgrind)",
    )
    parser.add_argument("--callgrind-n", type=int, default=1000, help="callgrind: small run")
    parser.add_argument("--callgrind-n2", type=int, default=6000, help="callgrind: large run")
    parser.add_argument(
        "--framework-instructions",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --instructions, count the Flask and Django rows too (about 8 more minutes)",
    )
    parser.add_argument("--callgrind-fw-n", type=int, default=300, help="callgrind, frameworks")
    parser.add_argument("--callgrind-fw-n2", type=int, default=1300, help="callgrind, frameworks")
    parser.add_argument(
        "--cpu",
        default="fastest",
        help="CPU for every in-process worker: fastest (of a short loop at the start; the "
        "default), a CPU number, or none (unpinned); see benchmarks/cpus.py",
    )
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--out", default=RESULTS, help="results directory")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 if any row errored (peers' rows too)"
    )
    args = parser.parse_args(argv)
    try:
        cpus.check(args.cpu)
    except ValueError as error:
        parser.error(str(error))
    quick = args.quick
    args.rounds = args.rounds or (1 if quick else 7)
    args.target_s = args.target_s or (0.02 if quick else 0.25)
    args.http_rounds = args.http_rounds or (1 if quick else 6)
    args.http_seconds = args.http_seconds or (1 if quick else 3)
    args.health_seconds = args.health_seconds or (1 if quick else 3)
    args.warmup = not quick
    if args.instructions is None:
        args.instructions = not quick and instructions.available() is None
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    started = time.time()
    machine = report.machine_info()
    args.pinning = machine["cpu_pinning"] = cpus.choose(args.cpu)
    log(
        f"{'quick' if args.quick else 'full'} run on {machine['cpu']} x{machine['cores']}, "
        f"Python {machine['python']}; in-process workers {args.pinning['why']} "
        f"(loop ms by CPU: {args.pinning['speeds_ms'] or '-'})"
    )
    tmp = tempfile.mkdtemp(prefix="wsgi-observe-bench-")
    env = clean_env(tmp)
    os.makedirs(env["LOG_DIR"], exist_ok=True)
    try:
        inproc = run_inprocess(args, tmp, env)
        if args.instructions:
            log("instructions per request under callgrind (a few minutes)")
            inproc["instructions"] = instructions.count_all(
                instructions.COUNTED, args.callgrind_n, args.callgrind_n2, 1000, env, log
            )
            if args.framework_instructions:
                # The framework apps cost ~100x the hello app per request: fewer requests.
                inproc["instructions"].update(
                    instructions.count_all(
                        instructions.FRAMEWORK_COUNTED,
                        args.callgrind_fw_n,
                        args.callgrind_fw_n2,
                        300,
                        env,
                        log,
                    )
                )
        memory = {"skipped": True} if args.skip_memory else run_memory(args, env)
        http = {"na": "skipped (--skip-http)"} if args.skip_http else run_http(args, tmp, env)
        results = report.build(args, machine, inproc, memory, http, time.time() - started)
        os.makedirs(args.out, exist_ok=True)
        png_note = report.write_png(http, os.path.join(args.out, "latency.png"))
        if png_note:
            results["notes"].append(f"latency.png not written: {png_note}")
        results["duration_s"] = round(time.time() - started, 1)
        results["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        report.write(results, args.out)
        print(report.markdown(results))
        log(f"done in {results['duration_s']:.0f}s; wrote {args.out}/latest.json, latest.md")
        broken = report.broken(results)
        for row in broken:
            log(f"FAILED: {row['id']} ({row['label']}): {(row['why'] or '').strip()[-1500:]}")
        if broken:
            log(f"{len(broken)} wsgi_observe configuration(s) could not be measured: exit 1")
            return 1
        if args.strict and any(row["status"] == "error" for row in results["rows"]):
            return 1
        return 0
    except Exception:
        traceback.print_exc()
        return 2
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
