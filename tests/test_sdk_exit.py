"""What the SDK does at interpreter exit with signals it could not deliver.

The script runs in a child process, because the exit hooks run only when an interpreter ends.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

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
