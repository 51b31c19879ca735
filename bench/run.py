"""Server benchmark: ingestion, balance checks and trace intake, measured against floors.

Starts real `tallystick serve` processes on loopback ports, on SQLite and PostgreSQL, with 1
and 2 worker processes, and drives them from separate load-generator processes
(bench/load.py). Each figure is the median of several runs after a warm-up. It is reported
with its ratio to a floor measured in the same run. The HTTP floor is the same server's floor
endpoints, which authenticate and parse the same bodies but store nothing. The storage floor
is raw inserts of the same rows without the server (bench/storage_floor.py).

    python bench/run.py            # the full run, about half an hour on 2 cores
    python bench/run.py --quick    # a smoke test of every scenario, about a minute

Only loopback addresses are used; every load run is bounded in time and request count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from seed import Tenant, seed_history, seed_tenant  # noqa: E402

from tallystick.server.db import Store  # noqa: E402
from tallystick.server.migrate import upgrade_to_head  # noqa: E402

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# Seconds a server may take to start and migrate before the run fails.
SERVER_START_TIMEOUT_S = 60


@dataclass(frozen=True)
class Profile:
    """Sizes and durations of one benchmark run."""

    runs: int
    warmup_s: float
    duration_s: float
    customers: int
    single_rate: int  # requests per second offered in the single-signal latency run
    balance_rate: int  # balance checks per second offered while signals are ingested
    background_batches_per_s: tuple[float, ...]  # 1,000-signal batches per second during balance checks, one case each
    history_signals: int
    floor_rows: int
    bulk_cases: tuple[tuple[int, int], ...]  # (batch size, customers)
    scenarios: tuple[str, ...]


FULL = Profile(
    runs=3,
    warmup_s=2,
    duration_s=6,
    customers=10_000,
    single_rate=1000,
    balance_rate=500,
    background_batches_per_s=(1, 5),
    history_signals=1_000_000,
    floor_rows=200_000,
    bulk_cases=((100, 1), (1000, 1), (100, 10_000), (1000, 10_000)),
    scenarios=("floors", "bulk", "single", "balance", "otlp", "growth"),
)
QUICK = Profile(
    runs=1,
    warmup_s=0.5,
    duration_s=1.5,
    customers=1_000,
    single_rate=200,
    balance_rate=100,
    background_batches_per_s=(1,),
    history_signals=20_000,
    floor_rows=20_000,
    bulk_cases=((100, 1), (1000, 1_000)),
    scenarios=("floors", "bulk", "single", "balance", "otlp", "growth"),
)
# The smallest case, which the test suite runs to prove that the benchmark works.
SMOKE = Profile(
    runs=1,
    warmup_s=0.3,
    duration_s=1,
    customers=10,
    single_rate=50,
    balance_rate=50,
    background_batches_per_s=(1,),
    history_signals=1_000,
    floor_rows=2_000,
    bulk_cases=((100, 1),),
    scenarios=("floors", "bulk"),
)


# Servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ProcessSampler:
    """Sample CPU time and resident memory of a server's processes every 0.2 s."""

    def __init__(self, root: psutil.Process) -> None:
        self.root = root
        self.samples: list[tuple[float, float]] = []  # (wall time, CPU seconds of all processes)
        self.peak_rss: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def processes(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            total = 0.0
            for process in self.processes():
                try:
                    times = process.cpu_times()
                    total += times.user + times.system
                    rss = process.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
                self.peak_rss[process.pid] = max(self.peak_rss.get(process.pid, 0), rss)
            self.samples.append((time.time(), total))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def cpu_between(self, start: float, end: float) -> float:
        """Return the CPU seconds the server used between two wall times, from the samples."""

        def at(moment: float) -> float:
            before = [sample for sample in self.samples if sample[0] <= moment]
            after = [sample for sample in self.samples if sample[0] >= moment]
            if not before:
                return after[0][1] if after else 0.0
            if not after:
                return before[-1][1]
            (t0, c0), (t1, c1) = before[-1], after[0]
            return c0 if t1 == t0 else c0 + (c1 - c0) * (moment - t0) / (t1 - t0)

        return at(end) - at(start)

    def peak_rss_mb(self) -> float:
        """Return the largest resident memory of any one server process, in MiB."""
        return max(self.peak_rss.values(), default=0) / 2**20


@dataclass
class Server:
    root: str
    process: subprocess.Popen[bytes]
    sampler: ProcessSampler
    workers: int

    def wait_idle(self, timeout_s: float = 60.0) -> None:
        """Wait until the server has finished earlier requests: under 5% of a core for 0.5 s."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            before = self._cpu_seconds()
            time.sleep(0.5)
            if self._cpu_seconds() - before < 0.025:
                return
        print(f"server at {self.root} still busy after {timeout_s:.0f} s", file=sys.stderr, flush=True)

    def _cpu_seconds(self) -> float:
        total = 0.0
        for process in self.sampler.processes():
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total


@contextmanager
def run_server(database_url: str, workers: int, log_path: Path) -> Iterator[Server]:
    """Start `tallystick serve` on a free loopback port and stop it afterwards."""
    port = free_port()
    environment = dict(
        os.environ,
        TALLYSTICK_DATABASE_URL=database_url,
        TALLYSTICK_BENCHMARK_ENDPOINTS="true",
        # The default per-key limit (1,000 requests per second) would cap the load runs.
        TALLYSTICK_RATE_LIMIT="off",
    )
    command = [
        sys.executable, "-m", "tallystick.cli.main", "serve",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--log-level", "warning",
    ]  # fmt: skip
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT)
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        ready = 0
        while ready < 5:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start; see {log_path}")
            try:
                ready = ready + 1 if httpx.get(root + "/healthz", timeout=2).status_code == 200 else 0
            except httpx.HTTPError:
                ready = 0
            time.sleep(0.2)
        # FastAPI builds each router's route table at the first request it matches. A path that
        # no route matches builds them all, so no measured request pays for it. Every worker
        # process builds its own tables, so a few such requests are sent.
        for _ in range(4 * workers):
            httpx.get(root + "/benchmark-warm-up", timeout=30)
        sampler = ProcessSampler(psutil.Process(process.pid))
        sampler.start()
        yield Server(root, process, sampler, workers)
        sampler.stop()
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_load(job: dict[str, Any]) -> dict[str, Any]:
    """Run bench/load.py in its own process with `job` and return its result."""
    completed = subprocess.run(
        [sys.executable, str(BENCH_DIR / "load.py")],
        input=json.dumps(job).encode(),
        capture_output=True,
        timeout=float(job["warmup_s"]) + float(job["duration_s"]) + 120,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"load generator failed: {completed.stderr.decode()[-2000:]}")
    return json.loads(completed.stdout)


@contextmanager
def background_load(job: dict[str, Any]) -> Iterator[None]:
    """Run a load generator beside the measured one, such as ingestion during balance checks."""
    process = subprocess.Popen(
        [sys.executable, str(BENCH_DIR / "load.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdin is not None
    process.stdin.write(json.dumps(job).encode())
    process.stdin.close()
    try:
        yield
    finally:
        try:
            process.wait(timeout=float(job["warmup_s"]) + float(job["duration_s"]) + 60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# Databases


@contextmanager
def bench_database(backend: str, postgres_url: str, work_dir: Path) -> Iterator[str]:
    """Create an empty database for one backend, migrated to the current schema."""
    if backend == "sqlite":
        url = f"sqlite:///{work_dir / f'bench-{secrets.token_hex(4)}.db'}"
        upgrade_to_head(url)
        yield url
        return

    import psycopg

    name = f"tallystick_bench_{secrets.token_hex(4)}"
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = postgres_url.rsplit("/", 1)[0] + "/" + name
    try:
        upgrade_to_head(url)
        yield url
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# Scenarios


@dataclass
class Result:
    backend: str
    workers: int
    scenario: str
    case: str
    unit: str
    value: float
    floor: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    cpu_ms_per_1000: float | None = None
    errors: int = 0
    dropped: int = 0  # open-loop requests not sent because too many were unanswered
    runs: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.value / self.floor if self.floor else None


class Bench:
    def __init__(self, profile: Profile, results: list[Result], key_prefix: str) -> None:
        self.profile = profile
        self.results = results
        self.key_prefix = key_prefix
        self.run_counter = 0
        # Signals per second of 1,000-signal batches over all customers, by (backend, workers).
        self.bulk_rates: dict[tuple[str, int], float] = {}

    def job(self, server: Server, tenant: Tenant, **values: Any) -> dict[str, Any]:
        self.run_counter += 1
        job = {
            "base_url": server.root,
            "api_key": tenant.api_key,
            "warmup_s": self.profile.warmup_s,
            "duration_s": self.profile.duration_s,
            "key_prefix": f"{self.key_prefix}-{self.run_counter}-",
            "server_processes": server.workers,
        }
        job.update(values)
        return job

    def measure(self, server: Server, tenant: Tenant, *, idle: bool = True, **values: Any) -> dict[str, Any]:
        """Run one load job `runs` times; return the run with the median throughput, and all.

        With `idle`, each run waits until the server has finished the requests of the run before.
        """
        outcomes = []
        for _ in range(self.profile.runs):
            if idle:
                server.wait_idle()
            outcome = run_load(self.job(server, tenant, **values))
            start, end = outcome["window"]
            outcome["cpu_s"] = server.sampler.cpu_between(start, end)
            outcomes.append(outcome)
        outcomes.sort(key=lambda item: item["items_per_s"])
        median = dict(outcomes[len(outcomes) // 2])
        median["all"] = [item["items_per_s"] for item in outcomes]
        median["p99_ms"] = statistics.median(item["p99_ms"] for item in outcomes)
        median["p50_ms"] = statistics.median(item["p50_ms"] for item in outcomes)
        median["errors"] = sum(item["errors"] for item in outcomes)
        median["dropped"] = sum(item.get("dropped", 0) for item in outcomes)
        samples = [sample for item in outcomes for sample in item["error_samples"]]
        if samples:
            print(f"    errors: {samples[:2]}", file=sys.stderr)
        return median

    def add(self, outcome: dict[str, Any], **values: Any) -> Result:
        items = outcome["items"]
        result = Result(
            value=values.pop("value", outcome["items_per_s"]),
            p50_ms=outcome["p50_ms"],
            p99_ms=outcome["p99_ms"],
            cpu_ms_per_1000=outcome["cpu_s"] * 1000 / items * 1000 if items else None,
            errors=outcome["errors"],
            dropped=outcome["dropped"],
            runs=outcome["all"],
            **values,
        )
        self.results.append(result)
        print(format_result(result), flush=True)
        return result

    def floors(self, backend: str, server: Server, tenant: Tenant) -> dict[str, float]:
        floors: dict[str, float] = {}
        for batch, _ in self.profile.bulk_cases:
            if f"signals_{batch}" in floors:
                continue
            outcome = self.measure(server, tenant, kind="signals_floor", mode="closed", concurrency=4, batch=batch)
            floors[f"signals_{batch}"] = outcome["items_per_s"]
            self.add(outcome, backend=backend, workers=server.workers, scenario="http floor",
                     case=f"parse {batch} signals", unit="signals/s")  # fmt: skip
        outcome = self.measure(server, tenant, kind="ping", mode="closed", concurrency=16)
        floors["ping"] = outcome["items_per_s"]
        self.add(outcome, backend=backend, workers=server.workers, scenario="http floor",
                 case="authenticated GET", unit="req/s")  # fmt: skip
        if "otlp" in self.profile.scenarios:
            outcome = self.measure(server, tenant, kind="otlp_floor", mode="closed", concurrency=4, batch=512)
            floors["otlp"] = outcome["items_per_s"]
            self.add(outcome, backend=backend, workers=server.workers, scenario="http floor",
                     case="decode 512 spans", unit="spans/s")  # fmt: skip
        return floors

    def bulk(self, backend: str, server: Server, tenant: Tenant, floors: dict[str, float],
             storage_floor: float | None, scenario: str = "bulk") -> dict[str, float]:  # fmt: skip
        rates = {}
        for batch, customers in self.profile.bulk_cases:
            outcome = self.measure(
                server, tenant, kind="signals", mode="closed", concurrency=4, batch=batch, customers=customers
            )
            case = f"batch {batch}, {customers} customer{'s' if customers > 1 else ''}"
            result = self.add(outcome, backend=backend, workers=server.workers, scenario=scenario, case=case,
                              unit="signals/s", floor=floors.get(f"signals_{batch}"))  # fmt: skip
            if storage_floor:
                result.note = f"{result.value / storage_floor:.0%} of storage floor"
            rates[case] = result.value
            if batch == 1000 and customers == self.profile.customers and scenario == "bulk":
                self.bulk_rates[(backend, server.workers)] = result.value
        return rates

    def single(self, backend: str, server: Server, tenant: Tenant, floors: dict[str, float]) -> None:
        customers = self.profile.customers
        outcome = self.measure(server, tenant, kind="signals", mode="closed", concurrency=16, batch=1, customers=customers)
        self.add(outcome, backend=backend, workers=server.workers, scenario="single", case="max rate, 16 connections",
                 unit="req/s", floor=floors.get("ping"))  # fmt: skip
        rate = self.profile.single_rate
        outcome = self.measure(server, tenant, kind="signals", mode="open", rate=rate, batch=1, customers=customers)
        self.add(outcome, backend=backend, workers=server.workers, scenario="single", case=f"offered {rate}/s",
                 unit="req/s")  # fmt: skip

    def balance(self, backend: str, server: Server, tenant: Tenant, floors: dict[str, float]) -> None:
        profile = self.profile
        # Ingestion beside the checks runs at most at half the rate this server reached with
        # 1,000-signal batches over many customers: above its capacity, queued batches would
        # hold every worker thread and the checks would measure that queue instead.
        measured = self.bulk_rates.get((backend, server.workers))
        rates = []
        for batches_per_s in profile.background_batches_per_s:
            if measured:
                batches_per_s = min(batches_per_s, round(measured / 2 / 1000, 1))
            if batches_per_s not in rates:
                rates.append(batches_per_s)
        for kind, label in (("balance", "GET balances"), ("hold", "POST hold")):
            for batches_per_s in rates:
                background = self.job(
                    server, tenant, kind="signals", mode="open", rate=batches_per_s, batch=1000, max_in_flight=4,
                    customers=profile.customers, warmup_s=0,
                    duration_s=profile.runs * (profile.warmup_s + profile.duration_s) + 5,
                )  # fmt: skip
                server.wait_idle()
                with background_load(background):
                    time.sleep(0.5)
                    outcome = self.measure(
                        server, tenant, idle=False, kind=kind, mode="open", rate=profile.balance_rate,
                        customers=profile.customers,
                    )  # fmt: skip
                signals_per_s = int(batches_per_s * 1000)
                self.add(outcome, backend=backend, workers=server.workers, scenario="balance",
                         case=f"{label} at {profile.balance_rate}/s, ingesting {signals_per_s} signals/s",
                         unit="req/s")  # fmt: skip

    def otlp(self, backend: str, server: Server, tenant: Tenant, floors: dict[str, float]) -> None:
        outcome = self.measure(
            server, tenant, kind="otlp", mode="closed", concurrency=4, batch=512, customers=self.profile.customers
        )
        self.add(outcome, backend=backend, workers=server.workers, scenario="otlp", case="512 LLM spans per export",
                 unit="spans/s", floor=floors.get("otlp"))  # fmt: skip


def attempt(label: str, scenario: Any, *args: Any) -> None:
    """Run one scenario; a failure is printed and the run goes on with the next one."""
    try:
        scenario(*args)
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        print(f"{label}: failed: {error}", file=sys.stderr, flush=True)


def storage_floor(database_url: str, tenant: Tenant, rows: int) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, str(BENCH_DIR / "storage_floor.py"), database_url, tenant.organization_id,
         tenant.customer_ids[0], str(rows), "1000"],
        capture_output=True, timeout=600, check=False,
    )  # fmt: skip
    if completed.returncode != 0:
        raise RuntimeError(f"storage floor failed: {completed.stderr.decode()[-2000:]}")
    return json.loads(completed.stdout)


def format_result(result: Result) -> str:
    parts = [f"{result.backend:8} w{result.workers} {result.scenario:10} {result.case:58} {result.value:>10,.0f} {result.unit}"]
    if result.ratio is not None:
        parts.append(f"({result.ratio:.0%} of floor {result.floor:,.0f})")
    if result.p99_ms:
        parts.append(f"p50 {result.p50_ms:.1f} ms p99 {result.p99_ms:.1f} ms")
    if result.cpu_ms_per_1000 is not None and result.unit != "req/s":
        parts.append(f"cpu {result.cpu_ms_per_1000:.0f} ms/1000")
    if result.errors:
        parts.append(f"{result.errors} errors")
    if result.dropped:
        parts.append(f"{result.dropped} dropped")
    if result.note:
        parts.append(result.note)
    return " ".join(parts)


def machine() -> dict[str, Any]:
    import sqlite3

    import psycopg
    import sqlalchemy

    info = {
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "psycopg": psycopg.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "load_average_at_start": os.getloadavg(),
    }
    try:
        with psycopg.connect(DEFAULT_POSTGRES_URL, connect_timeout=3) as connection:
            info["postgresql"] = connection.execute("SHOW server_version").fetchone()[0]
    except psycopg.Error:
        info["postgresql"] = None
    return info


def run_backend(bench: Bench, backend: str, workers_list: list[int], postgres_url: str, work_dir: Path) -> None:
    profile = bench.profile
    with bench_database(backend, postgres_url, work_dir) as url:
        store = Store.open(url)
        try:
            tenant = seed_tenant(store, customers=profile.customers)
        finally:
            store.dispose()
        floor = storage_floor(url, tenant, profile.floor_rows)
        bench.results.append(Result(backend=backend, workers=0, scenario="storage floor", case=floor["method"],
                                    unit="rows/s", value=floor["rows_per_s"]))  # fmt: skip
        print(format_result(bench.results[-1]), flush=True)

        rates_before: dict[int, dict[str, float]] = {}
        floors_by_workers: dict[int, dict[str, float]] = {}
        for workers in workers_list:
            with run_server(url, workers, work_dir / "server.log") as server:
                floors = bench.floors(backend, server, tenant)
                floors_by_workers[workers] = floors
                if "bulk" in profile.scenarios:
                    rates_before[workers] = bench.bulk(backend, server, tenant, floors, floor["rows_per_s"])
                for name, scenario in (("single", bench.single), ("balance", bench.balance), ("otlp", bench.otlp)):
                    if name in profile.scenarios:
                        attempt(f"{backend} w{workers} {name}", scenario, backend, server, tenant, floors)
            memory = Result(backend=backend, workers=workers, scenario="memory", case="peak RSS of any server process",
                            unit="MiB", value=server.sampler.peak_rss_mb())  # fmt: skip
            bench.results.append(memory)
            print(format_result(memory), flush=True)

        if "growth" not in profile.scenarios:
            return
        store = Store.open(url)
        try:
            seconds = seed_history(store, tenant, signals=profile.history_signals)
        finally:
            store.dispose()
        print(f"{backend}: seeded {profile.history_signals:,} signals and ledger entries in {seconds:.1f} s", flush=True)
        bench.results.append(Result(backend=backend, workers=0, scenario="growth seed",
                                    case=f"{profile.history_signals} signals + ledger entries", unit="s",
                                    value=seconds))  # fmt: skip
        workers = max(workers_list)
        with run_server(url, workers, work_dir / "server.log") as server:
            after = bench.bulk(backend, server, tenant, floors_by_workers[workers], floor["rows_per_s"],
                               scenario="growth")  # fmt: skip
        for case, rate in after.items():
            before = rates_before.get(workers, {}).get(case)
            if before:
                bench.results[-len(after) + list(after).index(case)].note = f"{rate / before - 1:+.0%} vs empty store"


def write_markdown(results: list[Result], info: dict[str, Any]) -> str:
    lines = [
        f"Machine: {info['cores']} cores ({info['cpu']}), {info['memory_gib']} GiB, Python {info['python']}, "
        f"PostgreSQL {info['postgresql']}, SQLite {info['sqlite']}, psycopg {info['psycopg']}, "
        f"SQLAlchemy {info['sqlalchemy']}; load average at start {info['load_average_at_start'][0]:.1f}.",
        "",
        "| backend | workers | scenario | case | value | ratio to floor | p50 / p99 (ms) | server CPU per 1,000 | note |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for result in results:
        ratio = f"{result.ratio:.0%}" if result.ratio is not None else ""
        latency = f"{result.p50_ms:.1f} / {result.p99_ms:.1f}" if result.p99_ms else ""
        cpu = f"{result.cpu_ms_per_1000:.0f} ms" if result.cpu_ms_per_1000 is not None and result.unit != "req/s" else ""
        workers = str(result.workers) if result.workers else ""
        value = f"{result.value:,.1f}" if result.unit in ("s", "MiB") else f"{result.value:,.0f}"
        lines.append(
            f"| {result.backend} | {workers} | {result.scenario} | {result.case} | {value} {result.unit} | "
            f"{ratio} | {latency} | {cpu} | {result.note} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Run every scenario briefly, as a smoke test.")
    parser.add_argument("--smoke", action="store_true", help="Run only the smallest case (floors and one bulk case).")
    parser.add_argument("--backends", default="sqlite,postgres", help="Comma-separated: sqlite, postgres.")
    parser.add_argument("--workers", default=None, help="Comma-separated server process counts (default 1,2; quick 1).")
    parser.add_argument("--scenarios", default=None,
                        help="Comma-separated subset of: bulk, single, balance, otlp, growth (floors always run).")  # fmt: skip
    parser.add_argument("--runs", type=int, default=None, help="Runs per figure; the median is reported.")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL,
                        help="Admin URL of a loopback PostgreSQL; a scratch database is created and dropped.")  # fmt: skip
    parser.add_argument("--output", type=Path, default=None, help="Write results as JSON and Markdown here (a prefix).")
    args = parser.parse_args()

    profile = FULL
    if args.quick:
        profile = QUICK
    if args.smoke:
        profile = SMOKE
    if args.runs:
        profile = Profile(**{**profile.__dict__, "runs": args.runs})
    if args.scenarios:
        profile = Profile(**{**profile.__dict__, "scenarios": ("floors", *args.scenarios.split(","))})
    workers_list = [int(value) for value in (args.workers or ("1" if args.quick or args.smoke else "1,2")).split(",")]
    if "127.0.0.1" not in args.postgres_url and "localhost" not in args.postgres_url:
        raise SystemExit("--postgres-url must point at a loopback address")

    info = machine()
    results: list[Result] = []
    bench = Bench(profile, results, key_prefix=secrets.token_hex(4))
    work_dir = Path(tempfile.mkdtemp(prefix="tallystick-bench-"))
    started = time.perf_counter()
    try:
        for backend in args.backends.split(","):
            run_backend(bench, backend.strip(), workers_list, args.postgres_url, work_dir)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    print(f"finished in {time.perf_counter() - started:.0f} s", flush=True)

    markdown = write_markdown(results, info)
    print(markdown)
    if args.output:
        args.output.with_suffix(".json").write_text(
            json.dumps({"machine": info, "results": [result.__dict__ for result in results]}, indent=2)
        )
        args.output.with_suffix(".md").write_text(markdown)


if __name__ == "__main__":
    main()
