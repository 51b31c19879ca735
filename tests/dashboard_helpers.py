"""Helpers for dashboard and portal tests: operators, and a browser-like HTTP client that signs
in and posts forms with their CSRF token."""

from __future__ import annotations

import html
import re
import secrets
from dataclasses import dataclass

import httpx

OPERATOR_PASSWORD = "correct horse battery staple"


@dataclass
class Operator:
    email: str
    password: str


def make_operator(store, organization_id: str) -> Operator:  # type: ignore[no-untyped-def]
    """Create an operator of the organization with a unique email."""
    from tallystick.server.dashboard.operators import create_operator

    email = f"operator-{secrets.token_hex(4)}@example.com"
    with store.transaction() as session:
        create_operator(session, organization_id=organization_id, email=email, password=OPERATOR_PASSWORD)
    return Operator(email=email, password=OPERATOR_PASSWORD)


def hidden_value(page_html: str, name: str) -> str:
    """Return the value of the first hidden input called `name`, or ""."""
    match = re.search(rf'name="{name}" value="([^"]*)"', page_html)
    return html.unescape(match.group(1)) if match else ""


def field_errors(page_html: str) -> list[str]:
    return [html.unescape(text) for text in re.findall(r'class="field-error"[^>]*>([^<]+)<', page_html)]


class DashboardClient:
    """An HTTP client that keeps cookies like a browser and does not follow redirects."""

    def __init__(self, root: str) -> None:
        self.http = httpx.Client(base_url=root, timeout=30, follow_redirects=False)

    def close(self) -> None:
        self.http.close()

    def sign_in(self, operator: Operator) -> httpx.Response:
        page = self.http.get("/dashboard/login")
        return self.http.post(
            "/dashboard/login",
            data={
                "form_token": hidden_value(page.text, "form_token"),
                "next": "/dashboard",
                "email": operator.email,
                "password": operator.password,
            },
        )

    def get(self, path: str, **kwargs) -> httpx.Response:  # type: ignore[no-untyped-def]
        return self.http.get(path, **kwargs)

    def csrf_token(self, path: str = "/dashboard") -> str:
        return hidden_value(self.http.get(path).text, "csrf_token")

    def submit(self, page_path: str, action: str, fields: dict[str, str]) -> httpx.Response:
        """Open `page_path` to read its CSRF token, then post `fields` to `action`."""
        return self.http.post(action, data={"csrf_token": self.csrf_token(page_path), **fields})
