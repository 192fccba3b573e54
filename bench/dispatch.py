"""Dispatch benchmark: callboard against a bare-aiohttp floor, measured side by side in one run.

What is measured (issue 3, "Benchmark"), for (a) the floor (`bench/floor_server.py`: the same
exchange on bare aiohttp with no logic) and (b) callboard (`callboard server --dev`):

- Latency, one caller, sequential: from sending a binary-protobuf Twirp CreateDispatch (a JWT as
  livekit-api makes them, one token reused) to the worker receiving its JobAssignment. The workers
  and the caller live in this process, so both timestamps come from one clock.
- Throughput: `--callers` concurrent callers against `--workers` workers for `--duration` seconds;
  a dispatch counts once its POST returned and its assignment arrived. For callboard, the server is
  then killed (SIGKILL, a crash) and its SQLite file is opened to check that every acknowledged
  dispatch and every assigned job has its row.
- Memory: server RSS (/proc/<pid>/status VmRSS) with 0 and with `--idle-workers` registered, idle
  workers; the difference per worker in KiB.

Every server is a subprocess of this one, on 127.0.0.1, stopped by its pid; every wait is bounded.
The workers and callers share this process and stand in for other machines, but here they share the
server's CPUs. So that they do not also share its event loop's core, each server's main process is
pinned to the first CPU, and this process and the servers' child processes (callboard's store
writer) to the others, both servers alike (`--no-pin`: the kernel places them). The server's and
this process's CPU use during the throughput run are printed next to it, and so is the CPU taken by
every other process meanwhile (a shared machine disturbs the figures; the table says so when it
did). Progress goes to stderr; the table (or, with --json, one JSON object) to stdout. The process
exits 0 when it measured everything, whether or not the targets are met.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import platform
import resource
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from livekit import api as lkapi
from livekit.protocol import agent as pb
from livekit.protocol import agent_dispatch as dpb

from callboard.client.worker import WorkerProtocol, worker_token
from common import bounded_gather, free_port, log, raise_nofile

T = TypeVar("T")

BENCH_DIR = Path(__file__).resolve().parent
DISPATCH_PATH = "/twirp/livekit.AgentDispatchService/CreateDispatch"
API_KEY, API_SECRET = "devkey", "secret"
AGENT_NAME = "bench-agent"
HOST = "127.0.0.1"
ASSIGNMENT_TIMEOUT_S = 10.0
CONNECT_CONCURRENCY = 50
NOFILE_WANTED = 8192
NOISY_PCT = 15.0  # other processes' CPU, % of one core, above which the run is flagged


class BenchError(Exception):
    """The benchmark could not measure what it set out to (a server failed, a dispatch was lost)."""


# --------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class Config:
    workers: int = 100
    callers: int = 50
    duration_s: float = 15.0
    warmup_s: float = 2.0
    latency_count: int = 2000
    latency_warmup: int = 300
    idle_workers: int = 1000
    log_level: str = "info"
    targets: tuple[str, ...] = ("floor", "callboard")
    quick: bool = False
    max_run_s: float = 900.0
    pin: bool = True  # see the module docstring and `Placement`


QUICK = Config(workers=10, callers=5, duration_s=2.0, warmup_s=0.5, latency_count=200,
               latency_warmup=50, idle_workers=100, quick=True, max_run_s=120.0)


def parse_args(argv: list[str] | None = None) -> tuple[Config, bool, Path | None]:
    p = argparse.ArgumentParser(description="callboard dispatch benchmark against a bare floor")
    p.add_argument("--quick", action="store_true", help="small numbers for a smoke run (< 60 s)")
    p.add_argument("--workers", type=int, help="connected workers for latency and throughput")
    p.add_argument("--callers", type=int, help="concurrent callers in the throughput run")
    p.add_argument("--duration", type=float, help="seconds of the measured throughput run")
    p.add_argument("--latency-count", type=int, help="sequential dispatches measured for latency")
    p.add_argument("--idle-workers", type=int, help="idle workers for the RSS measurement")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                   help="callboard's log level (default: info, the server's default)")
    p.add_argument("--only", choices=["floor", "callboard"], help="measure one side only")
    p.add_argument("--keep", type=Path, help="keep databases and server logs in this directory")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--no-pin", action="store_true",
                   help="leave CPU placement to the kernel (default, with 2+ CPUs: each server's "
                        "main process on the first CPU; this process and the servers' child "
                        "processes on the others)")
    args = p.parse_args(argv)
    cfg = QUICK if args.quick else Config()
    overrides = {
        "workers": args.workers, "callers": args.callers, "duration_s": args.duration,
        "latency_count": args.latency_count, "idle_workers": args.idle_workers,
        "log_level": args.log_level, "targets": (args.only,) if args.only else None,
        "pin": False if args.no_pin else None,
    }
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    for name in ("workers", "callers", "latency_count", "idle_workers"):
        if getattr(cfg, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return cfg, args.json, args.keep


# --------------------------------------------------------------------------------------------------
# Server processes


@dataclass(frozen=True)
class Placement:
    """Which CPUs the servers' main processes get, and which everything else: this process (the
    callers and workers) and the servers' children. Why: left to the kernel, the callers and
    workers often run on the core of the server's event loop, the one thread that limits it, and
    how often depends on the run (in alternating runs of callboard, +7-14 % dispatches/s pinned)."""

    server: frozenset[int]
    rest: frozenset[int]

    @classmethod
    def of(cls, cfg: Config) -> Placement | None:
        cpus = _usable_cpus()
        if not cfg.pin or len(cpus) < 2:
            return None
        return cls(frozenset(cpus[:1]), frozenset(cpus[1:]))

    def describe(self) -> str:
        return (f"each server's main process on CPU {_cpus(self.server)}; this process and the "
                f"servers' child processes on CPU {_cpus(self.rest)}")


@functools.cache
def _usable_cpus() -> list[int]:
    """The CPUs this process could use at start, before it pinned itself."""
    return sorted(os.sched_getaffinity(0))


def _cpus(cpus: frozenset[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def pin(pid: int, cpus: frozenset[int]) -> None:
    """Every thread of the process (affinity is per thread on Linux)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):
            os.sched_setaffinity(int(task.name), cpus)


@dataclass
class Server:
    """One server subprocess: started, probed, measured and stopped by its own pid."""

    name: str
    argv: list[str]
    port: int
    log_path: Path
    db: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    placement: Placement | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BenchError(f"{self.name} server is not running")
        return self.proc.pid

    def start(self, timeout_s: float = 30.0) -> None:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} server exited at start:\n{self.log_tail()}")
            if self._healthy():
                log(f"{self.name} server up (pid {self.pid}, port {self.port})")
                self._place()
                return
            time.sleep(0.05)
        raise BenchError(
            f"{self.name} server did not answer in {timeout_s:g} s:\n{self.log_tail()}"
        )

    def _place(self) -> None:
        """Pinned once up: by then callboard has started its store writer."""
        if self.placement is None:
            return
        main, *children = self.pids()
        pin(main, self.placement.server)
        for child in children:
            pin(child, self.placement.rest)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/", timeout=1) as resp:
                return bool(resp.read() == b"OK")
        except OSError:
            return False

    def pids(self) -> list[int]:
        """The server and its child processes (callboard's store writer runs in one)."""
        found = [self.pid]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == self.pid:
                    found.append(int(stat.parent.name))
        return found

    def rss_kib(self) -> int:
        """VmRSS of the server and its children."""
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        if not total:
            raise BenchError(f"no VmRSS for pid {self.pid}")
        return total

    def cpu_s(self) -> float:
        """User + system CPU seconds of the server and its children (all their threads)."""
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log(f"{self.name} server (pid {proc.pid}) ignored signal {sig}; killing it")
            proc.kill()
            proc.wait(timeout=timeout_s)

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def make_server(name: str, workdir: Path, tag: str, cfg: Config) -> Server:
    port = free_port()
    log_path = workdir / f"{name}-{tag}.log"
    placement = Placement.of(cfg)
    if name == "floor":
        argv = [sys.executable, str(BENCH_DIR / "floor_server.py"), "--port", str(port)]
        return Server(name, argv, port, log_path, placement=placement)
    db = workdir / f"callboard-{tag}.db"
    argv = [sys.executable, "-m", "callboard.cli.main", "server", "--dev", "--host", HOST,
            "--port", str(port), "--db", str(db), "--log-level", cfg.log_level]
    return Server(name, argv, port, log_path, db=db, placement=placement)


# --------------------------------------------------------------------------------------------------
# Workers: the light client's sans-IO `WorkerProtocol`, driven by a lean loop of our own


@dataclass(frozen=True)
class Arrival:
    at_s: float  # time.perf_counter() when the assignment frame was handled
    job_id: str


@dataclass
class Board:
    """Assignments awaited, by room name (each dispatch gets a room of its own)."""

    waiters: dict[str, asyncio.Future[Arrival]] = field(default_factory=dict)
    strays: int = 0

    def expect(self, room: str) -> asyncio.Future[Arrival]:
        future: asyncio.Future[Arrival] = asyncio.get_running_loop().create_future()
        self.waiters[room] = future
        return future

    def arrived(self, assignment: pb.JobAssignment, at_s: float) -> None:
        future = self.waiters.pop(assignment.job.room.name, None)
        if future is None or future.done():
            self.strays += 1
            return
        future.set_result(Arrival(at_s, assignment.job.id))


@dataclass
class BenchProtocol(WorkerProtocol):
    """`WorkerProtocol` that reports assignments to the board and keeps no history (long runs)."""

    board: Board = field(default_factory=Board)

    def receive(self, msg: pb.ServerMessage) -> list[pb.WorkerMessage]:
        now = time.perf_counter()
        if msg.WhichOneof("message") == "assignment":
            self.board.arrived(msg.assignment, now)
        replies = super().receive(msg)
        self.offers.clear()
        self.assignments.clear()
        return replies


class BenchWorker:
    """A `WorkerProtocol` over one WebSocket. Unlike `LightWorker` it keeps no queue of every
    message received (which grows without bound over a long run) and reuses one token."""

    def __init__(self, proto: BenchProtocol) -> None:
        self.proto = proto
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    async def connect(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        self.ws = await session.ws_connect(f"{url}/agent", max_msg_size=0,
                                           headers={"Authorization": f"Bearer {token}"})
        await self.ws.send_bytes(self.proto.register().SerializeToString())
        first = pb.ServerMessage.FromString(await self.ws.receive_bytes(timeout=10))
        if first.WhichOneof("message") != "register":
            raise BenchError(f"expected a register response, got {first.WhichOneof('message')}")
        self.proto.receive(first)
        await self.ws.send_bytes(self.proto.status(0.0).SerializeToString())
        self._reader = asyncio.create_task(self._read(self.ws))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for raw in ws:
            if raw.type is aiohttp.WSMsgType.BINARY:
                for reply in self.proto.receive(pb.ServerMessage.FromString(raw.data)):
                    await ws.send_bytes(reply.SerializeToString())

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 2)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader


async def connect_workers(session: aiohttp.ClientSession, url: str, board: Board,
                          count: int) -> list[BenchWorker]:
    token = worker_token(API_KEY, API_SECRET)
    workers = [BenchWorker(BenchProtocol(agent_name=AGENT_NAME, board=board)) for _ in range(count)]

    def connecting(worker: BenchWorker) -> Callable[[], Awaitable[None]]:
        return lambda: worker.connect(session, url, token)

    await bounded_gather([connecting(w) for w in workers], CONNECT_CONCURRENCY)
    return workers


async def close_workers(workers: list[BenchWorker]) -> None:
    await bounded_gather([w.close for w in workers], CONNECT_CONCURRENCY)


# --------------------------------------------------------------------------------------------------
# Callers


@dataclass(frozen=True)
class Sample:
    latency_s: float  # POST sent -> assignment received by the worker
    dispatch_id: str
    job_id: str
    ack_s: float = 0.0  # POST sent -> HTTP response read (callboard answers after its commit)


def api_token() -> str:
    """One token for every request, as livekit-api's AccessToken makes it (6 h TTL)."""
    grants = lkapi.VideoGrants(room_admin=True, room_create=True)
    return lkapi.AccessToken(API_KEY, API_SECRET).with_grants(grants).to_jwt()


@dataclass
class Caller:
    """CreateDispatch over Twirp with livekit-api's headers; waits for the worker's assignment."""

    session: aiohttp.ClientSession
    url: str
    token: str
    board: Board
    prefix: str
    rooms: int = 0

    async def dispatch(self) -> Sample:
        self.rooms += 1
        room = f"{self.prefix}-{self.rooms}"
        body = dpb.CreateAgentDispatchRequest(agent_name=AGENT_NAME, room=room,
                                              metadata="bench").SerializeToString()
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/protobuf",
                   "User-Agent": "callboard-bench", "X-Livekit-Request-Id": str(uuid.uuid4())}
        arrival = self.board.expect(room)
        start = time.perf_counter()
        async with self.session.post(self.url + DISPATCH_PATH, data=body, headers=headers) as resp:
            payload = await resp.read()
            if resp.status != 200:
                raise BenchError(f"CreateDispatch -> HTTP {resp.status}: {payload[:300]!r}")
        acked = time.perf_counter()
        try:
            got = await asyncio.wait_for(arrival, ASSIGNMENT_TIMEOUT_S)
        except TimeoutError:
            why = f"no assignment for room {room} within {ASSIGNMENT_TIMEOUT_S:g} s"
            raise BenchError(why) from None
        return Sample(got.at_s - start, dpb.AgentDispatch.FromString(payload).id, got.job_id,
                      acked - start)


@dataclass
class Ledger:
    """Every dispatch acknowledged and every job assigned, for the durability check."""

    dispatch_ids: set[str] = field(default_factory=set)
    job_ids: set[str] = field(default_factory=set)

    def add(self, samples: list[Sample]) -> None:
        self.dispatch_ids.update(s.dispatch_id for s in samples)
        self.job_ids.update(s.job_id for s in samples)


# --------------------------------------------------------------------------------------------------
# Measurements


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


@dataclass(frozen=True)
class Latency:
    count: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    other_cpu_pct: float = 0.0  # CPU used by processes other than the server and the bench
    ack_p50_ms: float = 0.0  # POST sent -> response read: informational, no target
    ack_p99_ms: float = 0.0

    @classmethod
    def of(cls, samples: list[Sample], other_cpu_pct: float = 0.0) -> Latency:
        ms = [s.latency_s * 1000 for s in samples]
        acks = [s.ack_s * 1000 for s in samples]
        return cls(len(ms), percentile(ms, 50), percentile(ms, 99), statistics.fmean(ms), max(ms),
                   other_cpu_pct, percentile(acks, 50), percentile(acks, 99))


@dataclass(frozen=True)
class Throughput:
    workers: int
    callers: int
    dispatches: int
    elapsed_s: float
    per_s: float
    latency: Latency
    server_cpu_pct: float  # of one core, over the measured run
    bench_cpu_pct: float  # this process (workers + callers), of one core
    other_cpu_pct: float  # every other process on the machine, of one core: noise
    server_cpu_us_per_dispatch: float
    server_rss_growth_kib: int  # server RSS after the measured run minus before it


@dataclass(frozen=True)
class Durability:
    acknowledged_dispatches: int
    assigned_jobs: int
    dispatch_rows: int
    job_rows: int
    missing_dispatches: int
    missing_jobs: int
    assigned_job_states: dict[str, int]
    ok: bool


@dataclass(frozen=True)
class Memory:
    idle_workers: int
    rss_0_kib: int
    rss_n_kib: int
    kib_per_worker: float


@dataclass
class TargetResult:
    name: str
    latency: Latency | None = None
    throughput: Throughput | None = None
    durability: Durability | None = None
    memory: Memory | None = None


async def sequential(caller: Caller, count: int) -> list[Sample]:
    return [await caller.dispatch() for _ in range(count)]


async def measure_latency(server: Server, caller: Caller, cfg: Config, ledger: Ledger) -> Latency:
    ledger.add(await sequential(caller, cfg.latency_warmup))
    window = CpuWindow(server)
    samples = await sequential(caller, cfg.latency_count)
    window.stop()
    ledger.add(samples)
    return Latency.of(samples, window.pct(window.other_s))


async def run_callers(callers: list[Caller], seconds: float) -> tuple[list[Sample], float]:
    """Every caller dispatches back to back until the deadline; returns samples and elapsed s."""
    samples: list[Sample] = []
    start = time.perf_counter()
    deadline = start + seconds

    async def loop(caller: Caller) -> None:
        while time.perf_counter() < deadline:
            samples.append(await caller.dispatch())

    await asyncio.gather(*(loop(c) for c in callers))
    return samples, time.perf_counter() - start


async def measure_throughput(server: Server, callers: list[Caller], cfg: Config,
                             ledger: Ledger) -> Throughput:
    warm, _ = await run_callers(callers, cfg.warmup_s)
    ledger.add(warm)
    rss_before, window = server.rss_kib(), CpuWindow(server)
    samples, elapsed = await run_callers(callers, cfg.duration_s)
    window.stop()
    rss_growth = server.rss_kib() - rss_before
    ledger.add(samples)
    count = len(samples)
    return Throughput(
        workers=cfg.workers, callers=len(callers), dispatches=count, elapsed_s=elapsed,
        per_s=count / elapsed, latency=Latency.of(samples, window.pct(window.other_s)),
        server_cpu_pct=window.pct(window.server_s), bench_cpu_pct=window.pct(window.self_s),
        other_cpu_pct=window.pct(window.other_s),
        server_cpu_us_per_dispatch=1e6 * window.server_s / max(count, 1),
        server_rss_growth_kib=rss_growth,
    )


def _self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _machine_busy_s() -> float:
    """CPU seconds spent by user processes (user + nice + system of every CPU, /proc/stat, less
    kernel threads).

    Loopback traffic is handled in interrupt and softirq context, or by kernel threads such as
    ksoftirqd: it belongs to the benchmark, yet is in no process's own user + system time, so
    neither counts as another process's load."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:4]]
    return (sum(ticks) - _kernel_thread_ticks()) / os.sysconf("SC_CLK_TCK")


def _kernel_thread_ticks() -> int:
    """utime + stime of kernel threads (children of kthreadd, pid 2)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if fields[1] == "2":  # ppid
            total += int(fields[11]) + int(fields[12])
    return total


class CpuWindow:
    """CPU used over a stretch of time by the server, by this process, and by everyone else."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self._start = (time.perf_counter(), server.cpu_s(), _self_cpu_s(), _machine_busy_s())
        self.elapsed_s = self.server_s = self.self_s = self.other_s = 0.0

    def stop(self) -> None:
        t0, server0, self0, busy0 = self._start
        self.elapsed_s = time.perf_counter() - t0
        self.server_s = self.server.cpu_s() - server0
        self.self_s = _self_cpu_s() - self0
        self.other_s = max(0.0, _machine_busy_s() - busy0 - self.server_s - self.self_s)

    def pct(self, cpu_s: float) -> float:
        """As a percentage of one core."""
        return 100 * cpu_s / self.elapsed_s if self.elapsed_s else 0.0


def check_store(db: Path, ledger: Ledger) -> Durability:
    """Open the (killed) server's SQLite file and look for every acknowledged record."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        dispatches = {row[0] for row in conn.execute("SELECT dispatch_id FROM dispatches")}
        jobs = dict(conn.execute("SELECT job_id, state FROM jobs").fetchall())
    missing_d = len(ledger.dispatch_ids - dispatches)
    missing_j = len(ledger.job_ids - jobs.keys())
    states = Counter(str(jobs[j]) for j in ledger.job_ids if j in jobs)
    ok = (missing_d == 0 and missing_j == 0 and len(dispatches) == len(ledger.dispatch_ids)
          and len(jobs) == len(dispatches))
    return Durability(len(ledger.dispatch_ids), len(ledger.job_ids), len(dispatches), len(jobs),
                      missing_d, missing_j, dict(sorted(states.items())), ok)


def client_session(limit: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit),
                                 timeout=aiohttp.ClientTimeout(total=30))


async def bench_dispatch(name: str, cfg: Config, workdir: Path, result: TargetResult) -> None:
    """Latency and throughput against one server; for callboard, then the crash + store check."""
    server = make_server(name, workdir, "dispatch", cfg)
    server.start()
    board, ledger, token = Board(), Ledger(), api_token()
    try:
        async with client_session(0) as ws_session, client_session(cfg.callers) as http:
            workers = await connect_workers(ws_session, server.url, board, cfg.workers)
            log(f"{name}: {len(workers)} workers registered; latency, {cfg.latency_count} "
                f"sequential dispatches")
            single = Caller(http, server.url, token, board, f"{name}-seq")
            result.latency = await measure_latency(server, single, cfg, ledger)
            log(f"{name}: throughput, {cfg.callers} callers for {cfg.duration_s:g} s")
            callers = [Caller(http, server.url, token, board, f"{name}-c{i}")
                       for i in range(cfg.callers)]
            result.throughput = await measure_throughput(server, callers, cfg, ledger)
            if server.db is not None:
                server.stop(signal.SIGKILL)  # a crash, right after the last acknowledgement
                log(f"{name}: killed; checking the store for {len(ledger.dispatch_ids)} dispatches")
                result.durability = check_store(server.db, ledger)
            await close_workers(workers)
    finally:
        server.stop()


async def bench_memory(name: str, cfg: Config, workdir: Path, result: TargetResult) -> None:
    server = make_server(name, workdir, "memory", cfg)
    server.start()
    board = Board()
    try:
        async with client_session(0) as ws_session, client_session(4) as http:
            await _warm_up(server, ws_session, http, board)
            rss_0 = server.rss_kib()
            log(f"{name}: RSS {rss_0} KiB idle; connecting {cfg.idle_workers} workers")
            workers = await connect_workers(ws_session, server.url, board, cfg.idle_workers)
            await asyncio.sleep(2.0)  # let the server finish handling the status updates
            rss_n = server.rss_kib()
            log(f"{name}: RSS {rss_n} KiB with {len(workers)} idle workers")
            await close_workers(workers)
        per_worker = (rss_n - rss_0) / cfg.idle_workers
        result.memory = Memory(cfg.idle_workers, rss_0, rss_n, per_worker)
    finally:
        server.stop()


async def _warm_up(server: Server, ws_session: aiohttp.ClientSession,
                   http: aiohttp.ClientSession, board: Board) -> None:
    """Exercise every code path once so lazy imports and caches are in the 0-worker baseline."""
    workers = await connect_workers(ws_session, server.url, board, 10)
    await sequential(Caller(http, server.url, api_token(), board, f"{server.name}-warm"), 20)
    await close_workers(workers)
    await asyncio.sleep(1.0)


# --------------------------------------------------------------------------------------------------
# Report


@dataclass(frozen=True)
class Verdict:
    what: str
    target: str
    value: float | None
    passed: bool | None  # None: not measured


def ratio(b: float | None, a: float | None) -> float | None:
    return b / a if a and b is not None else None


def verdicts(floor: TargetResult, board: TargetResult) -> list[Verdict]:
    fl, cb = floor.latency, board.latency
    p50 = ratio(cb.p50_ms, fl.p50_ms) if cb and fl else None
    p99 = ratio(cb.p99_ms, fl.p99_ms) if cb and fl else None
    rate = board.throughput.per_s if board.throughput else None
    durable = board.durability.ok if board.durability else None
    kib = board.memory.kib_per_worker if board.memory else None
    return [
        Verdict("dispatch p50 vs floor p50", "<= 2x", p50, None if p50 is None else p50 <= 2),
        Verdict("dispatch p99 vs floor p99", "<= 4x", p99, None if p99 is None else p99 <= 4),
        Verdict("dispatches/s, all recorded", ">= 2000/s", rate,
                None if rate is None or durable is None else rate >= 2000 and durable),
        Verdict("KiB per idle worker", "<= 50 KiB", kib, None if kib is None else kib <= 50),
    ]


def _num(value: float | None, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "-"
    whole = isinstance(value, int) or abs(value) >= 1000
    text = f"{value:,.0f}" if whole else f"{value:.{digits}f}"
    return text + unit


def _row(label: str, a: str, b: str, r: str = "", target: str = "", verdict: str = "") -> str:
    return f"{label:<38}{a:>16}{b:>16}{r:>10}  {target:<12}{verdict}"


def _mark(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "-"}[passed]


def render(floor: TargetResult, board: TargetResult, cfg: Config) -> str:
    v = {x.what: x for x in verdicts(floor, board)}
    lines = [header(cfg), "", _row("", "floor (a)", "callboard (b)", "b/a", "target", "result")]
    lines += _latency_rows(floor, board, v)
    lines += _throughput_rows(floor, board, v)
    lines += _memory_rows(floor, board, v)
    if cfg.quick:
        lines += ["", "--quick: small numbers for a smoke run; the verdicts are not meaningful."]
    if (noise := max_noise_pct(floor, board)) > NOISY_PCT:
        lines += ["", f"WARNING: other processes used up to {noise:.0f}% of a core during the "
                  "measurements; the figures are disturbed. Re-run on a quiet machine."]
    return "\n".join(lines)


def max_noise_pct(*results: TargetResult) -> float:
    found = [0.0]
    for r in results:
        found += [x.other_cpu_pct for x in (r.latency, r.throughput) if x is not None]
    return max(found)


def header(cfg: Config) -> str:
    placement = Placement.of(cfg)
    where = (f"pinned: {placement.describe()}" if placement is not None
             else "not pinned: the kernel places the processes")
    return (f"callboard dispatch benchmark  ({os.cpu_count()} CPUs, {cpu_model()}, Python "
            f"{platform.python_version()}, aiohttp {aiohttp.__version__}, callboard log level "
            f"{cfg.log_level})\nworkers and callers run in the benchmark process and compete "
            f"with the server for the same cores; {where}")


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def _latency_rows(floor: TargetResult, board: TargetResult, v: dict[str, Verdict]) -> list[str]:
    a, b = floor.latency, board.latency
    shape = a or b
    n = shape.count if shape else 0
    rows = [f"-- latency, 1 caller, sequential ({n} dispatches): POST sent -> assignment received"]
    for label, key, verdict in (("p50", "p50_ms", "dispatch p50 vs floor p50"),
                                ("p99", "p99_ms", "dispatch p99 vs floor p99"),
                                ("mean", "mean_ms", ""), ("max", "max_ms", ""),
                                ("response p50 (POST -> reply)", "ack_p50_ms", ""),
                                ("response p99 (POST -> reply)", "ack_p99_ms", "")):
        va = getattr(a, key) if a else None
        vb = getattr(b, key) if b else None
        check = v.get(verdict)
        rows.append(_row(f"  {label}", _num(va, " ms"), _num(vb, " ms"),
                         _num(ratio(vb, va), "x"), check.target if check else "",
                         _mark(check.passed) if check else ""))
    noise = (_num(a.other_cpu_pct, "%") if a else "-", _num(b.other_cpu_pct, "%") if b else "-")
    rows.append(_row("  other processes' CPU (noise)", *noise))
    return rows


def _throughput_rows(floor: TargetResult, board: TargetResult, v: dict[str, Verdict]) -> list[str]:
    a, b = floor.throughput, board.throughput
    shape = a or b
    if shape is None:
        return []
    check = v["dispatches/s, all recorded"]
    rows = [f"-- throughput: {shape.workers} workers, {shape.callers} concurrent callers, "
            f"{shape.elapsed_s:.1f} s"]

    def get(t: Throughput | None, f: Callable[[Throughput], float]) -> float | None:
        return f(t) if t else None

    def line(label: str, f: Callable[[Throughput], float], unit: str, with_ratio: bool = False,
             target: str = "", verdict: str = "") -> str:
        va, vb = get(a, f), get(b, f)
        r = _num(ratio(vb, va), "x") if with_ratio else ""
        return _row(f"  {label}", _num(va, unit), _num(vb, unit), r, target, verdict)

    rows.append(line("dispatches/s", lambda t: t.per_s, "/s", True, check.target,
                     _mark(check.passed)))
    rows.append(line("dispatches completed", lambda t: t.dispatches, ""))
    rows.append(line("latency under load p50", lambda t: t.latency.p50_ms, " ms", True))
    rows.append(line("latency under load p99", lambda t: t.latency.p99_ms, " ms", True))
    rows.append(line("server CPU per dispatch", lambda t: t.server_cpu_us_per_dispatch, " us",
                     True))
    rows.append(line("server RSS growth per dispatch",
                     lambda t: t.server_rss_growth_kib / max(t.dispatches, 1), " KiB"))
    rows.append(line("server CPU (% of a core)", lambda t: t.server_cpu_pct, "%"))
    rows.append(line("bench process CPU (% of a core)", lambda t: t.bench_cpu_pct, "%"))
    rows.append(line("other processes' CPU (noise)", lambda t: t.other_cpu_pct, "%"))
    rows += _durability_rows(board.durability)
    return rows


def _durability_rows(d: Durability | None) -> list[str]:
    if d is None:
        return []
    states = ", ".join(f"{k} {n}" for k, n in d.assigned_job_states.items()) or "-"
    return [
        _row("  durable after SIGKILL (callboard)", "", "yes" if d.ok else "NO", "",
             "all rows", _mark(d.ok)),
        f"    {d.dispatch_rows} dispatch rows for {d.acknowledged_dispatches} acknowledged "
        f"dispatches ({d.missing_dispatches} missing); {d.job_rows} job rows for "
        f"{d.assigned_jobs} assigned jobs ({d.missing_jobs} missing)",
        f"    stored state of the jobs whose assignment was received: {states}",
    ]


def _memory_rows(floor: TargetResult, board: TargetResult, v: dict[str, Verdict]) -> list[str]:
    a, b = floor.memory, board.memory
    shape = a or b
    if shape is None:
        return []
    check = v["KiB per idle worker"]
    rows = [f"-- server RSS, {shape.idle_workers} idle registered workers "
            "(reference: an idle aiohttp WebSocket ~15 KiB)"]
    for label, key in (("RSS, 0 workers", "rss_0_kib"),
                       (f"RSS, {shape.idle_workers} workers", "rss_n_kib")):
        va = getattr(a, key) if a else None
        vb = getattr(b, key) if b else None
        rows.append(_row(f"  {label}", _num(va, " KiB"), _num(vb, " KiB")))
    va, vb = (a.kib_per_worker if a else None), (b.kib_per_worker if b else None)
    rows.append(_row("  KiB per idle worker", _num(va, " KiB", 1), _num(vb, " KiB", 1),
                     _num(ratio(vb, va), "x"), check.target, _mark(check.passed)))
    return rows


def as_json(floor: TargetResult, board: TargetResult, cfg: Config) -> dict[str, Any]:
    checks = verdicts(floor, board)
    return {
        "config": dataclasses.asdict(cfg),
        "machine": {"cpus": os.cpu_count(), "cpu": cpu_model(),
                    "python": platform.python_version(), "aiohttp": aiohttp.__version__},
        "placement": (placement.describe() if (placement := Placement.of(cfg)) else "kernel"),
        "floor": dataclasses.asdict(floor),
        "callboard": dataclasses.asdict(board),
        "targets": [dataclasses.asdict(c) for c in checks],
        "all_passed": all(c.passed for c in checks),
        "noise_cpu_pct": max_noise_pct(floor, board),
    }


# --------------------------------------------------------------------------------------------------
# Main


async def run(cfg: Config, workdir: Path) -> tuple[TargetResult, TargetResult]:
    results = {name: TargetResult(name) for name in ("floor", "callboard")}
    async with asyncio.timeout(cfg.max_run_s):
        for name in cfg.targets:
            await bench_dispatch(name, cfg, workdir, results[name])
        for name in cfg.targets:
            await bench_memory(name, cfg, workdir, results[name])
    return results["floor"], results["callboard"]


def main(argv: list[str] | None = None) -> int:
    cfg, want_json, keep = parse_args(argv)
    # LiveKit's dev secret "secret" is 6 bytes; kept for compatibility (livekit-wire §9).
    warnings.filterwarnings("ignore", message="The HMAC key is")
    limit = raise_nofile(max(NOFILE_WANTED, cfg.idle_workers + cfg.workers + 512))
    log(f"open-file limit {limit}; config {cfg}")
    placement = Placement.of(cfg)
    if placement is not None:
        pin(os.getpid(), placement.rest)  # the servers start here, then move (`Server._place`)
        log(f"pinned: {placement.describe()}")
    with contextlib.ExitStack() as stack:
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            workdir = keep
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cb-bench-")))
        try:
            floor, board = asyncio.run(run(cfg, workdir))
        except (BenchError, TimeoutError) as exc:
            log(f"benchmark failed: {exc!r}")
            return 1
    if want_json:
        print(json.dumps(as_json(floor, board, cfg), indent=2))
    else:
        print(render(floor, board, cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
