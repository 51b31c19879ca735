"""The server benchmark's smallest case runs end to end, so that a change cannot break it unseen."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "run.py"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_bench_smoke_run_reports_figures(backend, tmp_path):
    if backend == "postgres":
        from tests.conftest import _postgres_problem

        problem = _postgres_problem()
        if problem is not None:
            if os.environ.get("CI"):
                pytest.fail(problem)
            pytest.skip(problem)

    output = tmp_path / "results"
    completed = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--backends", backend, "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(output.with_suffix(".json").read_text())["results"]
    by_scenario = {(result["scenario"], result["case"]): result for result in results}
    bulk = by_scenario[("bulk", "batch 100, 1 customer")]
    assert bulk["value"] > 0
    assert bulk["errors"] == 0
    assert bulk["floor"] > 0
    assert any(result["scenario"] == "storage floor" and result["value"] > 0 for result in results)
    assert by_scenario[("memory", "peak RSS of any server process")]["value"] > 0
    assert "| bulk | batch 100, 1 customer |" in output.with_suffix(".md").read_text()
