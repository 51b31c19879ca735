"""Measure what the tallystick SDK adds to one LLM call answered locally.

Runs, in one process: N OpenAI chat completions (and N Anthropic messages) through the real
client libraries with their HTTP answered in-process, first without the SDK, then with
`initialize_tracing` + `autoinstrument` and each call inside `tracing(...)`, exporting spans to
a loopback OTLP collector. Prints the median and mean time per call and the difference.

    .venv/bin/python bench/sdk_overhead.py [--calls 2000]

Optionally also times `signal()` against a running server (--server URL --api-key KEY).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.sdk_fakes import anthropic_clients, openai_clients, start_collector  # noqa: E402

MESSAGES = [{"role": "user", "content": "How do I reset my password?"}]


def time_calls(call: Callable[[], object], count: int, warmup: int = 50) -> list[float]:
    for _ in range(warmup):
        call()
    durations = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        durations.append(time.perf_counter() - started)
    return durations


def micros(values: list[float]) -> tuple[float, float]:
    return statistics.median(values) * 1e6, statistics.fmean(values) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="Calls per measurement (default 2000).")
    parser.add_argument("--server", help="Root URL of a running tallystick server, to time signal() too.")
    parser.add_argument("--api-key", help="API key for --server.")
    args = parser.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)

    openai_sync, _ = openai_clients()
    anthropic_sync, _ = anthropic_clients()

    def openai_call() -> object:
        return openai_sync.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    def openai_stream() -> object:
        return list(openai_sync.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))

    def anthropic_call() -> object:
        return anthropic_sync.messages.create(
            model="claude-3-5-haiku-20241022", max_tokens=100, messages=MESSAGES
        )

    cases = {
        "openai chat": openai_call,
        "openai chat, streamed": openai_stream,
        "anthropic messages": anthropic_call,
    }
    baseline = {name: time_calls(call, args.calls) for name, call in cases.items()}

    import tallystick
    from tallystick.tracing import flush, stats

    collector, _server = start_collector()
    tallystick.initialize_tracing(
        api_key="bench", api_url="http://127.0.0.1:9", collector_endpoint=collector.url
    )
    tallystick.autoinstrument(["openai", "anthropic"])

    def traced(call: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            with tallystick.tracing("bench-customer", external_product_id="chatbot"):
                return call()

        return run

    instrumented = {name: time_calls(traced(call), args.calls) for name, call in cases.items()}
    flush()

    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; {args.calls} calls each"
    )
    print(f"{'call':<24}{'without SDK (µs)':>20}{'with SDK (µs)':>18}{'overhead (µs)':>16}")
    for name in cases:
        base_median, base_mean = micros(baseline[name])
        with_median, with_mean = micros(instrumented[name])
        print(
            f"{name:<24}{base_median:>11.0f} / {base_mean:<6.0f}{with_median:>10.0f} / {with_mean:<6.0f}"
            f"{with_median - base_median:>9.0f} / {with_mean - base_mean:<6.0f}"
        )
    print("(median / mean per call)")
    print(f"spans exported: {stats()['spans_exported']}, received by the collector: {len(collector.spans)}")

    if args.server and args.api_key:
        tallystick.initialize_tracing(
            api_key=args.api_key, api_url=args.server, collector_endpoint=collector.url
        )

        def send_signal() -> object:
            with tallystick.tracing("bench-customer"):
                return tallystick.signal("bench_event")

        median, mean = micros(time_calls(send_signal, min(args.calls, 500), warmup=10))
        print(f"signal() to {args.server}: {median:.0f} / {mean:.0f} µs")


if __name__ == "__main__":
    main()
