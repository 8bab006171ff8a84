"""The route class of the routes with a request body: a large JSON body is
parsed and validated off the event loop, and a flood of unknown keys is
counted rather than validated key by key.

FastAPI parses a JSON body and validates it on the event loop. Inside the
1 MiB JSON cap a body of unknown keys is one error per key: 60 000 of them
held the loop, and so /healthz, for over 2 s. Moving that work to a thread
is not enough on its own: pydantic-core holds the GIL for a whole
validation, and its error list is built in one call too. So a JSON body past
``OFF_LOOP_BYTES`` is parsed in a worker thread, keeps only the first
``MAX_REPORTED_ERRORS`` unknown keys of a model that forbids them (the others
are counted: Python bytecode, which lets the loop run), and is validated
there exactly as FastAPI validates it (the route's own body field). An
invalid body is answered from there (``errors.BoundedValidationError``: the
first errors and the total); a valid one reaches FastAPI already parsed, and
FastAPI's second validation of it is cheap (a valid body has only the
model's bounded fields). Smaller bodies take FastAPI's own path.

Errors render in the route's ``ErrorStyle``: ``styled_route`` makes the class.
"""

from __future__ import annotations

import asyncio
import email.message
import json
from collections.abc import Callable, Coroutine
from functools import lru_cache
from typing import Any, ClassVar

from fastapi import params
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from kubediffusers.runner.errors import MAX_REPORTED_ERRORS, BoundedValidationError, ErrorStyle

# Below this a body is a prompt and a few numbers (4000-character prompts
# included): FastAPI's own path on the loop costs less than a thread hop.
OFF_LOOP_BYTES = 16 * 1024

_UNPARSED = object()


class _ParsedRequest(Request):
    """A request whose JSON body may have been parsed already, in a worker thread."""

    parsed: Any = _UNPARSED

    async def json(self) -> Any:
        if self.parsed is _UNPARSED:
            return await super().json()
        return self.parsed


@lru_cache(maxsize=64)  # a request's header value; clients send a handful of them
def is_json(content_type: str | None) -> bool:
    """FastAPI's own test (``fastapi.routing``): application/json or application/*+json."""
    if not content_type:
        return False  # FastAPI's strict content type: no header, no JSON
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def _accepted_keys(model: type[BaseModel]) -> frozenset[str] | None:
    """The keys ``model`` accepts when it forbids all others; None when it takes or ignores others."""
    if model.model_config.get("extra") != "forbid":
        return None
    return frozenset(key for name, info in model.model_fields.items() for key in (name, info.alias) if key)


class BodyRoute(APIRoute):
    """A route whose large JSON bodies are parsed and validated in a worker thread."""

    error_style: ClassVar[ErrorStyle] = ErrorStyle.NATIVE

    def _json_body(self) -> tuple[Any, frozenset[str] | None] | None:
        """(the body field, the keys its model accepts) for a JSON body; None for none or a form."""
        field = self.body_field
        if field is None or isinstance(field.field_info, params.Form):
            return None
        model = field.field_info.annotation
        whole = len(self.dependant.body_params) == 1 and not getattr(field.field_info, "embed", False)
        keys = _accepted_keys(model) if whole and isinstance(model, type) and issubclass(model, BaseModel) else None
        return field, keys

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        body = self._json_body()
        if body is None:
            return handler
        field, keys = body

        def check(raw: bytes) -> Any:
            """In a worker thread: the parsed body, or the answer FastAPI would have raised."""
            try:
                parsed = json.loads(raw)
            except json.JSONDecodeError as exc:  # FastAPI's item for it
                raise RequestValidationError(
                    [{"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error", "input": {}, "ctx": {"error": exc.msg}}]
                ) from None
            except (ValueError, RecursionError):  # FastAPI's answer to a body json.loads cannot read
                raise HTTPException(400, "There was an error parsing the body") from None
            counted = 0
            checked = parsed
            if keys is not None and isinstance(parsed, dict) and len(parsed) > len(keys):
                checked, unknown = {}, 0
                for key, value in parsed.items():
                    if key in keys or unknown < MAX_REPORTED_ERRORS:
                        unknown += key not in keys
                        checked[key] = value
                    else:
                        counted += 1
            _, errors = field.validate(checked, {}, loc=("body",))
            if errors:
                raise BoundedValidationError(errors, len(errors) + counted)
            return parsed

        async def checked_handler(request: Request) -> Response:
            request = _ParsedRequest(request.scope, request.receive)
            if is_json(request.headers.get("content-type")):
                try:
                    raw = await request.body()
                except Exception:  # a body refused while it arrived (BodyLimits) or cut off: FastAPI's handler reads it as it would
                    return await handler(request)
                if len(raw) > OFF_LOOP_BYTES:
                    request.parsed = await asyncio.to_thread(check, raw)
            return await handler(request)

        return checked_handler


_ROUTE_CLASSES: dict[ErrorStyle, type[BodyRoute]] = {}


def styled_route(style: ErrorStyle) -> type[BodyRoute]:
    """The route class (``APIRouter(route_class=...)``) whose errors render in ``style``."""
    if style not in _ROUTE_CLASSES:
        _ROUTE_CLASSES[style] = type(f"{style.value.title()}Route", (BodyRoute,), {"error_style": style})
    return _ROUTE_CLASSES[style]
