"""Log calls name their fields with keys that the standard logging module accepts, and the
server's logging leaves out other libraries' noise."""

from __future__ import annotations

import ast
import logging
import subprocess
import sys
from pathlib import Path

# LogRecord's own attributes. logging raises KeyError for an `extra` key among them, but only
# when the call's level is enabled. Such a call fails in production at INFO and passes a test
# run at WARNING.
RESERVED = set(vars(logging.LogRecord("name", logging.INFO, "path", 1, "msg", None, None))) | {"message", "asctime"}


def _extra_keys(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        for keyword in node.keywords:
            if keyword.arg == "extra" and isinstance(keyword.value, ast.Dict):
                for key in keyword.value.keys:
                    if isinstance(key, ast.Constant) and isinstance(key.value, str):
                        found.append((node.lineno, key.value))
    return found


def test_extra_keys_not_reserved(repo_root: Path):
    sources = sorted((repo_root / "src" / "tallystick").rglob("*.py"))
    checked = 0
    clashes = []
    for path in sources:
        for line, key in _extra_keys(path):
            checked += 1
            if key in RESERVED:
                clashes.append(f"{path.relative_to(repo_root)}:{line}: {key}")
    assert checked > 100
    assert clashes == []


def test_migrations_log_without_alembic_plugin_lines(tmp_path: Path):
    script = (
        "from tallystick.server.observability import configure_logging\n"
        "from tallystick.server.migrate import upgrade_to_head\n"
        "configure_logging('info')\n"
        f"upgrade_to_head('sqlite:///{tmp_path / 'quiet.db'}')\n"
    )
    finished = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)

    assert finished.returncode == 0, finished.stderr
    assert "migrations.finished" in finished.stderr
    assert "setup plugin" not in finished.stderr
