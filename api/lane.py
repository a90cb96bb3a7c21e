"""A lean lane for `GET /v1/parcels/{tracking_id}`, the one high-volume public route.

FastAPI's per-request machinery (route matching through every router, dependency
solving, parameter validation) cost about a fifth of the lookup's CPU. This ASGI
middleware answers the lookup itself, running what the route runs, in the same order:
the customers router's dependencies (`guard`, today only the rate limit), then the
same handler body (`serve`, api/customers.py:parcel_response); its HTTP errors go
through the app's own HTTPException handler, so they read as before.

Everything else passes through to FastAPI untouched, including what the route's
declaration decides by itself: other methods (405) and an id longer than its
`max_length` of 64 (FastAPI's 422). tests/api/test_lookup_lane.py compares the two
lanes response by response, and fails when the customers router gains a dependency
the lane does not run.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi.exception_handlers import http_exception_handler
from starlette._utils import get_route_path
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

PATH = "/v1/parcels/{tracking_id}"
_PATH = re.compile(r"/v1/parcels/([^/]{1,64})")


@dataclass(frozen=True, slots=True)
class LaneRoute:
    """What the lane puts in scope["route"], so the metrics label it as the route."""

    path: str = PATH


class LookupLane:
    def __init__(
        self,
        app: ASGIApp,
        guard: Callable[[Request], Awaitable[None]],
        serve: Callable[[Request, str], Awaitable[Response]],
    ) -> None:
        self.app, self.guard, self.serve = app, guard, serve
        self.route = LaneRoute()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        match = _PATH.fullmatch(get_route_path(scope))
        if match is None:
            await self.app(scope, receive, send)
            return
        tracking_id = match[1]
        scope["route"], scope["path_params"] = self.route, {"tracking_id": tracking_id}
        request = Request(scope, receive)
        try:
            await self.guard(request)
            response = await self.serve(request, tracking_id)
        except HTTPException as exc:
            # The most specific handler, as Starlette picks it (a Problem is said in
            # the caller's language by its own handler, api/language.py).
            handlers = request.app.exception_handlers
            handler = next(
                (handlers[c] for c in type(exc).__mro__ if c in handlers), http_exception_handler
            )
            answer = handler(request, exc)
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)
