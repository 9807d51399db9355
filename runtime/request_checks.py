"""How `tha serve` checks a request and words a refusal: JSON bodies parsed within the limits
of tha.models.limits, a body over its route's size limit answered with that limit, and
validation errors as one line."""
from __future__ import annotations

import asyncio
import json
from typing import Any, Callable, Coroutine

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from tha.models.errors import ThaError
from tha.models.limits import MAX_JSON_BYTES, parse_json


class LimitedJsonRequest(Request):
    """A request whose JSON body is parsed with the limits of tha.models.limits (nesting depth,
    digits per number, no NaN): plain json.loads recurses per level and takes any integer, and
    FastAPI reports either as a bare "error parsing the body"."""

    async def json(self) -> Any:
        body = await self.body()
        try:  # off the loop: the depth scan of a 1 MB body takes a fifth of a second
            return await asyncio.to_thread(parse_json, body, "body")
        except ThaError as err:
            raise HTTPException(400, str(err)) from None


class LimitedJsonRoute(APIRoute):
    """FastAPI's hook for a custom Request class: its body parsing then calls LimitedJsonRequest.json.
    Every route's body is capped at the JSON limit unless it names its own (the two that carry
    files): a route's limit, unlike the app's, is enforced inside the middleware, so CORS and
    NamedBodyLimit see the refusal."""

    def __init__(self, path: str, endpoint: Callable[..., Any], *, max_body_size: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(path, endpoint, max_body_size=max_body_size or MAX_JSON_BYTES, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def limited(request: Request) -> Response:
            return await handler(LimitedJsonRequest(request.scope, request.receive))

        return limited


class NamedBodyLimit:
    """Starlette answers a body past its limit with a bare "Content Too Large" from inside its
    middleware (no handler sees it); this rewrites that answer to name the limit, as every
    other refusal names its problem and fix. ``limits`` maps a path to its limit in bytes."""

    def __init__(self, app: Callable, limits: Callable[[str], int]) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        replacing = False

        async def send_named(message: dict) -> None:
            nonlocal replacing
            if message["type"] == "http.response.start" and message["status"] == 413:
                replacing = True
                limit = self.limits(scope["path"])
                detail = f"the body is over this endpoint's limit of {limit / (1 << 20):g} MB ({limit:,} bytes)"
                body = json.dumps({"detail": f"{detail}; send a smaller one"}).encode()
                kept = [(k, v) for k, v in message["headers"] if k.lower() not in (b"content-type", b"content-length")]
                await send({**message, "headers": [*kept, (b"content-type", b"application/json"),
                                                   (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
            elif not replacing:  # the original 413 body is dropped
                await send(message)

        await self.app(scope, receive, send_named)


def validation_message(err: RequestValidationError, content_type: str, shown: int = 3) -> str:
    """FastAPI's list of validation errors as one line: where each is, then what."""
    errors = err.errors()
    parts = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:shown]]
    more = f" (and {len(errors) - shown} more)" if len(errors) > shown else ""
    # FastAPI reads a body as JSON only when its Content-Type says so (curl -d sends a form
    # type); otherwise the object it expected is "not a valid dictionary", which hides why.
    wanted_object = any(e["type"] in ("dict_type", "model_attributes_type") and e["loc"] == ("body",) for e in errors)
    if wanted_object and not content_type.startswith("application/json"):
        more += (f"; the body came as {content_type or 'no Content-Type'}: send it with "
                 "Content-Type: application/json")
    return "; ".join(parts) + more
