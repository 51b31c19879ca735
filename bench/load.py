"""Load generator of the server benchmark, run as its own process by bench/run.py.

Reads one JSON job from standard input, sends requests to a loopback server with aiohttp's
asyncio client, and prints one JSON result to standard output. Two modes:

- closed: `concurrency` workers each send the next request as soon as the previous response
  arrives, which measures the maximum throughput;
- open: requests start at a fixed `rate` per second whatever the answers, and latency counts
  from each request's scheduled start, so a slow server cannot hide its queueing delay
  (coordinated omission). A request due while `max_in_flight` requests are unanswered is
  dropped and counted, so a server that cannot keep up ends the run instead of stalling it.

Requests during the first `warmup_s` seconds are sent but not counted. Every run stops after
`duration_s` measured seconds or `max_requests` requests, whichever comes first.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from payloads import CURRENCY_KEY, SignalBodies, TraceBodies

# Requests of one run at most, whatever the duration, so that a fast server cannot make a
# run unbounded.
MAX_REQUESTS = 2_000_000
# Seconds one request may take before it counts as an error.
REQUEST_TIMEOUT_S = 30.0
# Seconds an open-loop run waits for its last responses before it cancels them as dropped.
DRAIN_TIMEOUT_S = 10.0


@dataclass
class Tally:
    measure_from: float
    measure_to: float
    latencies: list[float] = field(default_factory=list)
    ok: int = 0
    errors: int = 0
    items: int = 0
    error_samples: list[str] = field(default_factory=list)
    sent: int = 0
    dropped: int = 0

    def record(self, scheduled: float, finished: float, ok: bool, items: int, problem: str | None) -> None:
        if not self.measure_from <= scheduled < self.measure_to:
            return
        self.latencies.append(finished - scheduled)
        if ok:
            self.ok += 1
            self.items += items
        else:
            self.errors += 1
            if problem and len(self.error_samples) < 5:
                self.error_samples.append(problem)


class Requests:
    """The request of one job kind: method, path, body and how many items it carries."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.kind = job["kind"]
        self.batch = int(job.get("batch", 1))
        customers = int(job.get("customers", 1))
        self.signals = SignalBodies(batch=self.batch, customers=customers, key_prefix=job.get("key_prefix", "k"))
        self.traces = TraceBodies(spans=self.batch, customers=customers) if self.kind in ("otlp", "otlp_floor") else None

    def next(self) -> tuple[str, str, bytes | None, dict[str, str], int]:
        json_headers = {"content-type": "application/json"}
        if self.kind == "signals":
            return "POST", "/api/v2/signals/bulk", self.signals.next_body(), json_headers, self.batch
        if self.kind == "signals_floor":
            return "POST", "/api/v2/benchmark/signals/bulk", self.signals.next_body(), json_headers, self.batch
        if self.kind == "ping":
            return "GET", "/api/v2/benchmark/ping", None, {}, 1
        if self.kind == "balance":
            customer = self.signals.random_customer()
            return "GET", f"/api/v2/customers/external/{customer}/credits/balances", None, {}, 1
        if self.kind == "hold":
            customer = self.signals.random_customer()
            body = orjson.dumps({"creditCurrencyKey": CURRENCY_KEY, "amount": "1", "ttlSeconds": 30})
            return "POST", f"/api/v2/customers/external/{customer}/credits/holds", body, json_headers, 1
        assert self.traces is not None
        protobuf_headers = {"content-type": "application/x-protobuf"}
        path = "/v1/traces" if self.kind == "otlp" else "/api/v2/benchmark/traces"
        return "POST", path, self.traces.next_body(), protobuf_headers, self.batch


async def _send(client: aiohttp.ClientSession, requests: Requests, tally: Tally, scheduled: float) -> None:
    method, path, body, headers, items = requests.next()
    try:
        async with client.request(method, path, data=body, headers=headers) as response:
            content = await response.read()
        ok = response.status < 300
        problem = None if ok else f"{response.status} {content[:300].decode(errors='replace')}"
        if ok and requests.kind == "signals":
            answer = orjson.loads(content)
            if answer.get("failed"):
                problem = f"{answer['failed']} failed signals: {str(answer.get('errors'))[:300]}"
            items = answer.get("ingested", 0)
    except (aiohttp.ClientError, TimeoutError) as error:
        ok, problem = False, f"{type(error).__name__}: {error}"
    tally.record(scheduled, time.perf_counter(), ok, items, problem)


async def run_closed(
    job: dict[str, Any], clients: list[aiohttp.ClientSession], requests: Requests, tally: Tally
) -> None:
    deadline = tally.measure_to
    limit = min(int(job.get("max_requests", MAX_REQUESTS)), MAX_REQUESTS)

    async def worker(client: aiohttp.ClientSession) -> None:
        while time.perf_counter() < deadline and tally.sent < limit:
            tally.sent += 1
            await _send(client, requests, tally, time.perf_counter())

    await asyncio.gather(*(worker(client) for client in clients))


async def run_open(
    job: dict[str, Any], clients: list[aiohttp.ClientSession], requests: Requests, tally: Tally
) -> None:
    rate = float(job["rate"])
    limit = min(int(job.get("max_requests", MAX_REQUESTS)), MAX_REQUESTS)
    max_in_flight = int(job["max_in_flight"])
    start = time.perf_counter()
    pending: set[asyncio.Task[None]] = set()
    scheduled_count = 0
    while scheduled_count < limit:
        scheduled = start + scheduled_count / rate
        if scheduled >= tally.measure_to:
            break
        scheduled_count += 1
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(pending) >= max_in_flight:
            # The server is this far behind: the request is dropped, not queued without bound.
            if tally.measure_from <= scheduled < tally.measure_to:
                tally.dropped += 1
            continue
        tally.sent += 1
        # Round robin over the connections; a request whose connection is busy queues behind it.
        client = clients[scheduled_count % len(clients)]
        task = asyncio.create_task(_send(client, requests, tally, scheduled))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        _done, late = await asyncio.wait(pending, timeout=DRAIN_TIMEOUT_S)
        for task in late:
            task.cancel()
        tally.dropped += len(late)


async def connect_balanced(
    base_url: str, headers: dict[str, str], count: int, processes: int
) -> list[aiohttp.ClientSession]:
    """Open `count` keep-alive connections, spread evenly over the server's worker processes.

    Worker processes share one listening socket, and whichever is awake accepts: left alone,
    all the connections of a run often land on one process, and a 2-process server measures
    like a 1-process one. Each connection calls the floor ping route, which returns the id of
    the process that handled it. A connection to a process that already has its share is
    closed and opened again, up to a bounded number of tries.
    """
    clients = []
    served_by: dict[int, int] = {}
    share = -(-count // processes)
    reopen_budget = 20 * count
    for _ in range(count):
        client = _one_connection(base_url, headers)
        while processes > 1:
            async with client.get("/api/v2/benchmark/ping", raise_for_status=True) as response:
                process = int((await response.json())["process"])
            if served_by.get(process, 0) < share or reopen_budget <= 0:
                served_by[process] = served_by.get(process, 0) + 1
                break
            reopen_budget -= 1
            await client.close()
            client = _one_connection(base_url, headers)
        clients.append(client)
    if processes > 1 and len(served_by) < processes:
        print(f"warning: connections reached only {len(served_by)} of {processes} server processes", file=sys.stderr)
    return clients


def _one_connection(base_url: str, headers: dict[str, str]) -> aiohttp.ClientSession:
    # One keep-alive connection per session: a request sent while it is busy waits for it.
    connector = aiohttp.TCPConnector(limit=1)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    return aiohttp.ClientSession(base_url=base_url, headers=headers, connector=connector, timeout=timeout)


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, int(round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


async def main(job: dict[str, Any]) -> dict[str, Any]:
    base_url = job["base_url"]
    host = urlsplit(base_url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"refusing to load {base_url}: the benchmark only targets loopback addresses")

    requests = Requests(job)
    # Open-loop runs keep at most 64 requests unanswered and drop the rest, which bounds the
    # backlog a server that cannot keep up is left with when the run ends.
    job.setdefault("max_in_flight", 64)
    connections = int(job.get("concurrency", 0)) or int(job["max_in_flight"])
    headers = {"authorization": f"Bearer {job['api_key']}"}
    clients = await connect_balanced(base_url, headers, connections, int(job.get("server_processes", 1)))
    try:
        now = time.perf_counter()
        tally = Tally(measure_from=now + float(job["warmup_s"]), measure_to=now + float(job["warmup_s"]) + float(job["duration_s"]))
        wall_from = time.time() + float(job["warmup_s"])
        if job["mode"] == "closed":
            await run_closed(job, clients, requests, tally)
        else:
            await run_open(job, clients, requests, tally)
    finally:
        for client in clients:
            await client.close()

    measured = min(float(job["duration_s"]), time.perf_counter() - tally.measure_from)
    latencies = sorted(tally.latencies)
    return {
        "kind": job["kind"],
        "mode": job["mode"],
        "ok": tally.ok,
        "errors": tally.errors,
        "dropped": tally.dropped,
        "error_samples": tally.error_samples,
        "items": tally.items,
        "seconds": measured,
        "requests_per_s": tally.ok / measured if measured > 0 else 0.0,
        "items_per_s": tally.items / measured if measured > 0 else 0.0,
        "p50_ms": (percentile(latencies, 0.50) or 0) * 1000,
        "p99_ms": (percentile(latencies, 0.99) or 0) * 1000,
        "max_ms": (latencies[-1] if latencies else 0) * 1000,
        "window": [wall_from, wall_from + measured],
    }


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(main(json.load(sys.stdin)))
    json.dump(result, sys.stdout)
