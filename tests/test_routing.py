"""Route order: every API path is served by one router only, whatever order they are mounted in."""

from __future__ import annotations

import re

from starlette.routing import Match


def test_no_path_matches_two_routers():
    from tallystick.server.routers import all_routers

    routers = all_routers()
    for router in routers:
        for route in router.routes:
            # A concrete path of the template, with every parameter filled in.
            path = re.sub(r"\{[^}]+\}", "x1", route.path)
            for method in sorted(route.methods):
                scope = {"type": "http", "method": method, "path": path, "root_path": "", "query_string": b""}
                owners = [
                    other
                    for other in routers
                    if other is not router
                    and any(candidate.matches(dict(scope))[0] == Match.FULL for candidate in other.routes)
                ]
                assert owners == [], f"{method} {path} matches routes of more than one router"
