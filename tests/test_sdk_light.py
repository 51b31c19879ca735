"""The base install (the SDK) imports without any server dependency."""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

import pytest

SERVER_ONLY_MODULES = ["fastapi", "sqlalchemy", "alembic", "psycopg", "typer", "uvicorn", "starlette"]
# Packages that only the extras bring (instrumentors and the libraries they trace).
OPTIONAL_MODULES = ["openinference", "wrapt", "openai", "anthropic", "pydantic"]
SDK_MODULES = [
    "tallystick",
    "tallystick.client",
    "tallystick.async_client",
    "tallystick.errors",
    "tallystick.types",
    "tallystick.resources",
    "tallystick.tracing",
    "tallystick.signals",
    "tallystick.balance",
    "tallystick.instrumentation",
]


@pytest.mark.slow
def test_sdk_imports_with_base_dependencies_only(tmp_path: Path, repo_root: Path):
    environment = tmp_path / "sdk-venv"
    venv.EnvBuilder(with_pip=True).create(environment)
    python = environment / "bin" / "python"

    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(repo_root)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-2000:]

    check = (
        "import importlib.util, sys\n"
        f"for name in {SERVER_ONLY_MODULES!r}:\n"
        "    assert importlib.util.find_spec(name) is None, name + ' is installed'\n"
        f"for name in {OPTIONAL_MODULES!r}:\n"
        "    assert importlib.util.find_spec(name) is None, name + ' is installed'\n"
        "import importlib\n"
        f"for module in {SDK_MODULES!r}:\n"
        "    importlib.import_module(module)\n"
        "    assert not any(name.split('.')[0] in sys.modules for name in "
        f"{SERVER_ONLY_MODULES + OPTIONAL_MODULES!r}), module\n"
        "import tallystick\n"
        "client = tallystick.Client(api_url='http://127.0.0.1:9', api_key='k')\n"
        "client.close()\n"
        "tallystick.initialize_tracing(api_key='k', api_url='http://127.0.0.1:9')\n"
        "assert tallystick.autoinstrument() == []\n"
        "with tallystick.tracing('customer-1', external_product_id='chatbot'):\n"
        "    pass\n"
        "print(tallystick.__version__)\n"
    )
    result = subprocess.run([str(python), "-c", check], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    import tallystick

    assert result.stdout.strip() == tallystick.__version__
