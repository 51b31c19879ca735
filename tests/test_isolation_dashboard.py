"""Tenant isolation of the server-rendered pages: an operator of B reaches nothing of A.

The walk enumerates the app's /dashboard routes with ids in their path, so pages added later
are walked without a change here. B's operator, signed in with a valid session, opens each
page with A's ids (GET) and submits each form with A's ids and a valid CSRF token of B's
session (POST). Every response must be an error and show nothing of A, and A's objects, read
through the API, must be unchanged afterwards.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.dashboard_helpers import DashboardClient, make_operator
from tests.test_isolation_routes import (
    PATH_PARAMETER,
    SHARED_NAMES,
    World,
    app_routes,
    build_world,
    first_difference,
    snapshot,
)

# Path parameters of the pages that the API routes name differently.
PAGE_PARAMETERS = {"name": "webhook_name"}


def add_page_ids(world: World, store) -> None:  # type: ignore[no-untyped-def]
    """Add the ids that only pages take: the organization's API key and a pricing line."""
    from tallystick.server.models import ApiKey, ProductAttribute

    with store.read_sessions() as session:
        key_id = session.scalar(select(ApiKey.id).where(ApiKey.organization_id == world.tenant.organization_id))
        line_id = session.scalar(
            select(ProductAttribute.id).where(ProductAttribute.organization_id == world.tenant.organization_id)
        )
    world.add("key_id", key_id)
    world.add("line_id", line_id)


def page_values(world: World, path: str) -> dict[str, str]:
    values = {}
    for parameter in PATH_PARAMETER.findall(path):
        value = world.value_for("/", PAGE_PARAMETERS.get(parameter, parameter))
        if value is not None:
            values[parameter] = value
    return values


def test_operator_of_other_organization_sees_no_page(server, store, tenant, other_tenant):
    from tallystick.server.app import create_app
    from tallystick.server.settings import Settings

    routes = app_routes(create_app(Settings(database_url=server.database_url), store=store))
    pages = [(method, path) for method, path, _route in routes if path.startswith("/dashboard/") and "{" in path]
    if not pages:
        pytest.skip("this app has no dashboard")
    served = {(method, path) for method, path, _route in routes}
    owner = build_world(tenant, store, served)
    intruder = build_world(other_tenant, store, served)
    add_page_ids(owner, store)
    before = snapshot(owner, routes)

    browser = DashboardClient(server.root)
    assert browser.sign_in(make_operator(store, other_tenant.organization_id)).status_code == 303
    csrf_token = browser.csrf_token()
    assert csrf_token
    walked, problems = [], []

    # Form posts last, so that a broken check cannot hide what the pages show.
    for method, path in sorted(pages, key=lambda item: (item[0] == "POST", item[1])):
        parameters = PATH_PARAMETER.findall(path)
        values = page_values(owner, path)
        missing = [name for name in parameters if name not in values]
        if missing:
            problems.append(f"{method} {path}: no object for {missing}; add one to the world builders")
            continue
        url = PATH_PARAMETER.sub(lambda match: values[match.group(1)], path)
        if method == "GET":
            response = browser.get(url)
        else:
            response = browser.http.post(url, data={"csrf_token": csrf_token})
        walked.append(f"{method} {path}")
        shared = any(PAGE_PARAMETERS.get(name, name) in SHARED_NAMES for name in parameters)
        if response.status_code < 400 and not shared:
            problems.append(f"{method} {path} with the other organization's ids: {response.status_code}")
        if response.status_code >= 500:
            problems.append(f"{method} {path}: {response.status_code}")
        if owner.marker in response.text:
            problems.append(f"{method} {path} shows the other organization's data")
    browser.close()
    after = snapshot(owner, routes)

    print(f"walked {len(walked)} dashboard routes with ids")
    assert not problems, "\n".join(problems)
    changed = sorted(url for url in before if before[url] != after.get(url))
    assert changed == [], [first_difference(url, before[url], after.get(url, "")) for url in changed]
    assert intruder.marker
    assert len(walked) >= 10
