"""`tallystick serve --workers 2`: the worker processes log JSON lines like a single process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port

STARTUP_TIMEOUT_SECONDS = 60


def test_workers_log_requests(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "server.log"
    command = [
        sys.executable, "-m", "tallystick.cli.main", "serve",
        "--port", str(port), "--workers", "2", "--log-level", "info",
        "--database-url", f"sqlite:///{tmp_path / 'logs.db'}",
    ]  # fmt: skip
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        answered = False
        while not answered:
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            try:
                answered = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/api/v2/customers", timeout=5).status_code == 401
        # Log lines are written as the requests finish; give the worker a moment to flush.
        time.sleep(0.5)
    finally:
        process.terminate()
        process.wait(timeout=20)

    events = []
    for line in log_path.read_text().splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    finished = [event for event in events if event["event"] == "request.finished"]
    # The request went to /api/v2/customers, which is logged as the route given in code.
    assert {event.get("route") for event in finished} >= {"/healthz", "/api/v2/customers/"}
    assert any(event["event"] == "server.started" for event in events)
