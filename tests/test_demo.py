"""`tallystick demo --no-serve` runs the integration guide and its summary matches the API."""

from __future__ import annotations

import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, serve_app

MESSAGES = 6
PRO_CREDITS = 2000
PRO_PRICE_CENTS = 7900


def _field(output: str, label: str) -> str:
    match = re.search(rf"^  {re.escape(label)}\s+(.+)$", output, re.MULTILINE)
    assert match is not None, f"{label!r} missing from the summary:\n{output}"
    return match.group(1).strip()


def _dollars(text: str) -> Decimal:
    return Decimal(text.removeprefix("$"))


@pytest.mark.slow
def test_demo_summary_matches_api(tmp_path: Path):
    database = tmp_path / "demo.db"
    result = subprocess.run(
        [
            sys.executable, "-m", "tallystick.cli.main", "demo", "--no-serve",
            "--messages", str(MESSAGES), "--port", str(free_port()), "--database", str(database),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "HOME": str(tmp_path)},
    )
    output = result.stdout
    assert result.returncode == 0, result.stdout + result.stderr
    # The virtual environment is not on PATH, so the closing hint names the script by its path.
    assert f"{Path(sys.executable).with_name('tallystick')} serve --port" in output

    assert _field(output, "Messages answered") == f"{MESSAGES} of {MESSAGES}"
    assert _field(output, "Credits used") == f"{MESSAGES} chat_credits"
    assert _field(output, "Credits left") == f"{PRO_CREDITS - MESSAGES} chat_credits"
    assert _field(output, "Signals with priced cost") == str(MESSAGES)
    assert _field(output, "Value delivered") == f"{4 * MESSAGES} min of support time saved"
    # Four minutes a message at $60 an hour is $4 a message.
    assert _field(output, "Money saved") == f"${4 * MESSAGES}.00 at $60/hour"
    receipt_url = _field(output, "Receipt:")
    email, password = _field(output, "Login:").split(" / ")
    revenue = _dollars(_field(output, "Revenue of credits used"))
    cost = _dollars(_field(output, "AI cost"))
    margin = _dollars(_field(output, "Margin"))
    # Each message draws one credit of the Pro plan: $79 buys 2,000 credits.
    expected_revenue = Decimal(PRO_PRICE_CENTS) / 100 / PRO_CREDITS * MESSAGES
    assert revenue == expected_revenue.quantize(Decimal("0.000001"))
    assert cost > 0
    # Each figure is rounded to micro-dollars on its own, so the three may differ by one step.
    assert abs(margin - (revenue - cost)) <= Decimal("0.000001")
    key = _field(output, "API key:")

    # Read the same figures back from a fresh server on the demo's database.
    from tallystick.server.app import create_app
    from tallystick.server.settings import Settings

    url = f"sqlite:///{database}"
    with serve_app(create_app(Settings(database_url=url)), url) as running:
        http = httpx.Client(base_url=running.api_url, headers={"Authorization": f"Bearer {key}"})
        [balance] = http.get("/customers/external/demo-customer/credits/balances").json()["data"]
        assert balance["available"] == PRO_CREDITS - MESSAGES
        signals = http.get("/signals/", params={"externalCustomerId": "demo-customer"}).json()["data"]
        assert len(signals) == MESSAGES
        api_cost = sum(Decimal(item["cost"]["amount"]) for item in signals)
        assert api_cost.quantize(Decimal("0.000001")) == cost
        assert all(item["cost"]["status"] == "priced" for item in signals)
        checkouts = http.get("/checkouts/").json()["data"]
        assert [item["status"] for item in checkouts] == ["completed"]
        receipt_path = receipt_url.split("/", 3)[3]
        page = httpx.get(f"{running.root}/{receipt_path}")
        assert page.status_code == 200
        assert "Time saved" in page.text

        # The printed operator account signs in to the dashboard.
        with httpx.Client(base_url=running.root, follow_redirects=False) as browser:
            login = browser.get("/dashboard/login")
            token = re.search(r'name="form_token" value="([^"]+)"', login.text)
            assert token is not None
            signed_in = browser.post(
                "/dashboard/login", data={"form_token": token.group(1), "email": email, "password": password}
            )
            assert signed_in.status_code in (302, 303), signed_in.text[:500]
            overview = browser.get("/dashboard")
            assert overview.status_code == 200
            assert "Ada Example" in overview.text or "demo-customer" in overview.text


def test_demo_catalog_matches_example(repo_root: Path):
    from tallystick.demo.run import CATALOG_FILE

    assert CATALOG_FILE.read_text() == (repo_root / "examples/chatbot/catalog.yaml").read_text()
