"""Measure what the tallystick SDK adds to one LLM call answered locally.

One run of this script measures both sides. Each case is the same call through the real openai
and anthropic client libraries with their HTTP served in-process: bare, and with
`initialize_tracing` + `autoinstrument` and the call inside `tracing(...)`, exporting spans to a
loopback OTLP collector. Bare and instrumented calls run in alternating child processes (the
instrumentors patch the libraries for the whole process), several rounds each, so a change in
the machine's load during the run hits both sides alike. It prints the median over rounds of
each round's median time per call.

    .venv/bin/python bench/sdk_overhead.py [--calls 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = [{"role": "user", "content": "How do I reset my password?"}]
WARMUP_CALLS = 50


def time_calls(call: Callable[[], object], count: int) -> float:
    """Return the median seconds per call over `count` calls, after a warm-up."""
    for _ in range(WARMUP_CALLS):
        call()
    durations = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        durations.append(time.perf_counter() - started)
    return statistics.median(durations)


def measure(mode: str, count: int) -> dict[str, float]:
    """Time every case in this process, bare or with the SDK; return median seconds per case."""
    sys.path.insert(0, str(ROOT))
    warnings.simplefilter("ignore", DeprecationWarning)
    from tests.sdk_fakes import anthropic_clients, openai_clients

    wrap: Callable[[Callable[[], object]], Callable[[], object]] = lambda call: call  # noqa: E731
    if mode == "sdk":
        import tallystick

        # The collector runs in its own process, so decoding spans does not compete with the
        # measured calls for this process's GIL.
        collector = subprocess.Popen(
            [sys.executable, __file__, "--mode", "collector"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert collector.stdout is not None
        collector_url = collector.stdout.readline().strip()
        tallystick.initialize_tracing(api_key="bench", api_url="http://127.0.0.1:9", collector_endpoint=collector_url)
        tallystick.autoinstrument(["openai", "anthropic"])

        def wrap(call: Callable[[], object]) -> Callable[[], object]:
            def traced() -> object:
                with tallystick.tracing("bench-customer", external_product_id="chatbot"):
                    return call()

            return traced

    openai_sync, _ = openai_clients()
    anthropic_sync, _ = anthropic_clients()
    cases = {
        "openai chat completion": lambda: openai_sync.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES),
        "openai chat completion, streamed": lambda: list(
            openai_sync.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        ),
        "anthropic message": lambda: anthropic_sync.messages.create(
            model="claude-3-5-haiku-20241022", max_tokens=100, messages=MESSAGES
        ),
    }
    results = {name: time_calls(wrap(call), count) for name, call in cases.items()}

    if mode == "sdk":
        from tallystick.tracing import flush, stats

        flush()
        results["spans exported"] = stats()["spans_exported"]
        received, _ = collector.communicate(timeout=60)
        results["spans received"] = int(received.strip().splitlines()[-1])
    return results


def serve_collector() -> None:
    """Run a loopback OTLP collector: print its URL, then the spans received once stdin closes."""
    sys.path.insert(0, str(ROOT))
    from tests.sdk_fakes import start_collector

    collector, server = start_collector()
    print(collector.url, flush=True)
    sys.stdin.read()
    server.shutdown()
    print(len(collector.spans), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="Calls per case in each round (default 1000).")
    parser.add_argument("--rounds", type=int, default=5, help="Rounds of bare and SDK processes (default 5).")
    parser.add_argument("--mode", choices=["bare", "sdk", "collector"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.mode == "collector":
        serve_collector()
        return
    if args.mode:
        print(json.dumps(measure(args.mode, args.calls)))
        return

    rounds: dict[str, list[dict[str, float]]] = {"bare": [], "sdk": []}
    load_before = os.getloadavg()
    for round_number in range(args.rounds):
        # Alternate which side goes first, so neither always runs on a warmer or quieter machine.
        order = ["bare", "sdk"] if round_number % 2 == 0 else ["sdk", "bare"]
        for mode in order:
            output = subprocess.run(
                [sys.executable, __file__, "--mode", mode, "--calls", str(args.calls)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            rounds[mode].append(json.loads(output.strip().splitlines()[-1]))
    load_after = os.getloadavg()

    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {load_before[0]:.1f} -> {load_after[0]:.1f}; "
        f"{args.rounds} rounds x {args.calls} calls per case and side"
    )
    print(f"{'call':<36}{'bare (µs)':>12}{'with SDK (µs)':>16}{'overhead (µs)':>16}")
    for name in rounds["bare"][0]:
        bare = statistics.median(result[name] for result in rounds["bare"]) * 1e6
        with_sdk = statistics.median(result[name] for result in rounds["sdk"]) * 1e6
        print(f"{name:<36}{bare:>12.0f}{with_sdk:>16.0f}{with_sdk - bare:>16.0f}")
    exported = sum(result["spans exported"] for result in rounds["sdk"])
    received = sum(result["spans received"] for result in rounds["sdk"])
    print(f"spans exported: {exported:.0f}, received by the collector: {received:.0f}")


if __name__ == "__main__":
    main()
