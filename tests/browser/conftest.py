"""Playwright fixtures that drive the system's Chromium (Debian package `chromium`).

No browser is downloaded: Playwright launches /usr/bin/chromium. Without it the browser tests
skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("TALLYSTICK_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# An iPhone 12-class screen, in CSS pixels.
PHONE_VIEWPORT = {"width": 390, "height": 844}


def _browser_problem() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as error:
        return f"the playwright package is not installed: {error}"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing; install it with: apt-get install chromium"
    return None


# Package scope: Playwright's sync API keeps an event loop running in the main thread while it
# is open, and tests elsewhere that call asyncio.run() fail if it outlives the browser tests.
@pytest.fixture(scope="package")
def browser() -> Iterator[object]:
    problem = _browser_problem()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{problem} (browser tests must run in CI)")
        pytest.skip(problem)

    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def phone_page(browser):  # type: ignore[no-untyped-def]
    """A fresh browser context at phone width, so tests share no cookies."""
    context = browser.new_context(viewport=PHONE_VIEWPORT, device_scale_factor=2, is_mobile=True)
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()
