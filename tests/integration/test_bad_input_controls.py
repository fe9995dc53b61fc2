"""The control of the bad-input suite: each route's request without its fault is accepted, so
every case of ``test_bad_input.py`` is refused for its fault and not for the rest of it."""

from __future__ import annotations

from badinput import ROUTES, build_world, method, route_id, valid_request
from fastapi.testclient import TestClient

from controlplane.runtime import Runtime


def test_every_routes_valid_request_is_accepted(client: TestClient, runtime: Runtime) -> None:
    world = build_world(client, runtime)
    # Reads first, then writes; those that end something (a workload, a key, a join token) last,
    # each credential revoked before it is rotated (a revoked credential may still be rotated once).
    order = sorted(
        ROUTES,
        key=lambda r: (
            method(r) != "GET",
            r.path.endswith(("/cancel", "/revoke", "/rotate")),
            r.path.endswith("/rotate"),
        ),
    )
    for route in order:
        r = valid_request(route, world).send(client)
        assert r.status_code < 300, (route_id(route), r.status_code, r.text)
