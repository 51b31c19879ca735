"""What the SDK does at interpreter exit with signals it could not deliver.

The script runs in a child process, because the exit hooks run only when an interpreter ends.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from tests.conftest import free_port

SCRIPT = textwrap.dedent(
    """
    import logging
    import sys

    import tallystick

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s signals=%(signals)s", defaults={"signals": "-"}))
    logging.getLogger("tallystick").addHandler(handler)
    logging.getLogger("tallystick").setLevel(logging.WARNING)

    # Nothing listens on this loopback port, so every delivery fails.
    tallystick.initialize_tracing(api_key="sk_test", api_url=sys.argv[1], signal_timeout=0.2)
    receipts = [tallystick.signal("chat_message", external_customer_id="acme") for _ in range(3)]
    print(",".join(receipt.status for receipt in receipts))
    """
)


def test_undelivered_signals_counted_at_exit():
    root = f"http://127.0.0.1:{free_port()}"

    finished = subprocess.run(
        [sys.executable, "-c", SCRIPT, root], capture_output=True, text=True, timeout=60, check=False
    )

    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == "buffered,buffered,buffered"
    assert "signals.lost_at_shutdown signals=3" in finished.stderr


# The exit budget of one stage (tallystick.tracing.EXIT_FLUSH_TIMEOUT, 3 s) plus 2 s for the
# interpreter to finish. Waiting for a whole resend (10 s) or for two exports (5 s each) exceeds it.
EXIT_LIMIT_SECONDS = 3.0 + 2.0

SILENT_SERVER_SCRIPT = textwrap.dedent(
    """
    import logging
    import sys
    import time

    import tallystick
    from tallystick.tracing import get_tracer

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(message)s signals=%(signals)s spans=%(spans)s", defaults={"signals": "-", "spans": "-"})
    )
    logging.getLogger("tallystick").addHandler(handler)
    logging.getLogger("tallystick").setLevel(logging.WARNING)

    tallystick.initialize_tracing(api_key="sk_test", api_url=sys.argv[1], signal_timeout=0.2)
    if sys.argv[2] == "signal":
        receipt = tallystick.signal("chat_message", external_customer_id="acme")
        print(receipt.status)
        # Lets the retry thread start its resend, which waits up to RESEND_TIMEOUT (10 s).
        time.sleep(0.5)
    else:
        with tallystick.tracing("acme"):
            get_tracer().start_span("work").end()
        print("spans")
    print(f"exit_started={time.time()}", flush=True)
    """
)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Yield the root URL of a loopback port that accepts connections and never responds."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    # The kernel completes the TCP handshake for queued connections that are never accepted,
    # so requests are sent and then wait for a response that never comes.
    listener.listen(64)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def run_until_exit(root: str, mode: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run the script and return it with the seconds between its last line and its exit."""
    finished = subprocess.run(
        [sys.executable, "-c", SILENT_SERVER_SCRIPT, root, mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    ended = time.time()
    started = float(finished.stdout.split("exit_started=")[1])
    return finished, ended - started


def test_exit_with_pending_resend_bounded(silent_server: str):
    finished, exit_seconds = run_until_exit(silent_server, "signal")

    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.startswith("buffered\n")
    assert exit_seconds < EXIT_LIMIT_SECONDS, finished.stderr
    assert "signals.lost_at_shutdown signals=1" in finished.stderr


def test_exit_with_unexported_spans_bounded(silent_server: str):
    finished, exit_seconds = run_until_exit(silent_server, "spans")

    assert finished.returncode == 0, finished.stderr
    assert exit_seconds < EXIT_LIMIT_SECONDS, finished.stderr
    assert "spans.lost_at_shutdown signals=- spans=2" in finished.stderr
