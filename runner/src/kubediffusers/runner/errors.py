"""Domain errors and their one mapping to HTTP.

Everything the runner raises on purpose is a ``RunnerError`` carrying its HTTP
status and a message meant for the caller. The handlers installed by
``install_error_handlers`` turn those, FastAPI's validation errors, Starlette's
HTTP errors and anything unexpected into livepeer ai-runner's shapes, so its
clients parse every answer and no stack trace ever reaches a client:
``{"detail": {"msg": ...}}``; a 422 as FastAPI's list
``{"detail": [{"loc", "msg", "type"}]}``, bounded (``validation_items``); an
empty JSON ``prompt`` as livepeer's 400 "Prompt must be provided.".

PICO's routes answer in PICO's shapes: the route's class carries its
``ErrorStyle`` (``routes.bodies.styled_route``), and the handlers render by it:
``{"detail": "<string>"}``, 503 "GPU_BUSY" for a full queue, 422 as FastAPI's list.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class RunnerError(Exception):
    status_code = 500
    retry_after: int | None = None
    headers: ClassVar[dict[str, str]] = {}  # sent with the answer (WWW-Authenticate)

    def __init__(self, msg: str, *, retry_after: int | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        if retry_after is not None:
            self.retry_after = retry_after


class InvalidInput(RunnerError):
    """The caller asked for something outside the limits or sent a bad file."""

    status_code = 400


class Unauthorized(RunnerError):
    status_code = 401
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": "Bearer"}  # RFC 6750: which scheme to use


class PayloadTooLarge(RunnerError):
    status_code = 413


class NotReady(RunnerError):
    """The model is loading or failed to load."""

    status_code = 503
    retry_after = 10


class QueueFull(RunnerError):
    status_code = 503
    retry_after = 5


class ShuttingDown(RunnerError):
    """The runner is draining for shutdown: new work is refused, and work left at the drain deadline fails."""

    status_code = 503
    retry_after = 1


class GpuOutOfMemory(RunnerError):
    """The accelerator ran out of memory; memory was freed, retrying smaller may work."""

    status_code = 503
    retry_after = 1


class RequestTimedOut(RunnerError):
    status_code = 504


class ClientGone(RunnerError):
    """The caller disconnected before its turn; nobody reads this answer."""

    status_code = 499


class InferenceFailed(RunnerError):
    status_code = 500


class JobNotFound(RunnerError):
    """No async job with that id here (never existed, or expired)."""

    status_code = 404


class JobNotFinished(RunnerError):
    """The job's result was asked for while it is queued or running."""

    status_code = 409


class JobCancelled(RunnerError):
    """The client cancelled the job with DELETE /jobs/{id}."""

    status_code = 410


class ModelUnavailable(Exception):
    """The model cannot be loaded; the message says why (shown in /health)."""


def one_line(exc: BaseException, limit: int = 500) -> str:
    """An exception as one line for a log, a status or a client: whitespace folded, bounded."""
    text = " ".join(str(exc).split())
    return text[:limit] if text else type(exc).__name__


def error_body(msg: str, **extra: Any) -> dict[str, Any]:
    return {"detail": {"msg": msg, **extra}}


def error_response(status_code: int, msg: str, *, retry_after: int | None = None, **extra: Any) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse(error_body(msg, **extra), status_code=status_code, headers=headers)


# A 422 reports this many errors at most (the last saying how many more there
# were), each location and message bounded: a body of a million unknown keys
# once made a 161 MiB answer.
MAX_REPORTED_ERRORS = 20
MAX_LOC_CHARS = 100
MAX_LOC_PARTS = 8
TOO_MANY_ERRORS = "too_many_errors"


class ErrorStyle(StrEnum):
    """Whose error shapes a route answers with (``routes.bodies.styled_route`` sets it on the route's class)."""

    NATIVE = "native"  # livepeer ai-runner's, which its clients parse
    PICO = "pico"


def style_of(request: Request) -> ErrorStyle:
    style = getattr(request.scope.get("route"), "error_style", ErrorStyle.NATIVE)
    return style if isinstance(style, ErrorStyle) else ErrorStyle.NATIVE


def styled_response(request: Request, status_code: int, msg: str, *, retry_after: int | None = None, queue_full: bool = False) -> JSONResponse:
    """An error in the shape of the route's API."""
    if style_of(request) is ErrorStyle.PICO:
        # PICO raised HTTPException(503, "GPU_BUSY") when its GPU gate was taken.
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return JSONResponse({"detail": "GPU_BUSY" if queue_full else msg}, status_code=status_code, headers=headers)
    return error_response(status_code, msg, retry_after=retry_after)


# livepeer ai-runner checks the JSON prompt itself and answers this 400 (routes/text_to_image.py:
# ``if not params.prompt``, after the schema held). A multipart ``prompt`` left empty is missing
# to FastAPI, a 422, there as here.
EMPTY_PROMPT = "Prompt must be provided."


def _bounded_item(err: Mapping[str, Any]) -> dict[str, Any]:
    # FastAPI's item without 'input' and 'ctx': they can echo huge or binary request data.
    loc = [part if isinstance(part, int) else str(part)[:MAX_LOC_CHARS] for part in tuple(err.get("loc", ()))[:MAX_LOC_PARTS]]
    return {"loc": loc, "msg": one_line(ValueError(err.get("msg", "invalid")), 200), "type": str(err.get("type", ""))[:100]}


def validation_items(errors: Sequence[Mapping[str, Any]], total: int | None = None) -> list[dict[str, Any]]:
    """FastAPI's 422 list for ``errors`` (``total`` of them, when only the first are at hand),
    at most ``MAX_REPORTED_ERRORS`` items: past the cap, the last item says how many more there were."""
    total = len(errors) if total is None else total
    if total <= MAX_REPORTED_ERRORS:
        return [_bounded_item(err) for err in errors[:MAX_REPORTED_ERRORS]]
    shown = [_bounded_item(err) for err in errors[: MAX_REPORTED_ERRORS - 1]]
    where = shown[-1]["loc"][:1] if shown else []
    more = {"loc": where, "msg": f"and {total - len(shown)} more errors (at most {MAX_REPORTED_ERRORS} are reported)", "type": TOO_MANY_ERRORS}
    return [*shown, more]


class BoundedValidationError(RequestValidationError):
    """A body's first errors and how many there were in all (``routes.bodies``: a flood of
    unknown keys is counted, not validated key by key)."""

    def __init__(self, errors: Sequence[Any], total: int) -> None:
        super().__init__(errors)
        self.total = total


def _is_empty_prompt(err: Mapping[str, Any]) -> bool:
    return tuple(err.get("loc", ())) == ("body", "prompt") and err.get("type") == "string_too_short"


async def _runner_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RunnerError)
    response = styled_response(request, exc.status_code, exc.msg, retry_after=exc.retry_after, queue_full=isinstance(exc, QueueFull))
    response.headers.update(exc.headers)
    return response


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    total = exc.total if isinstance(exc, BoundedValidationError) else len(errors)
    if style_of(request) is ErrorStyle.NATIVE and total == 1 and _is_empty_prompt(errors[0]):
        return error_response(400, EMPTY_PROMPT)
    return JSONResponse({"detail": validation_items(errors, total)}, status_code=422)


def _disk_full(exc: BaseException) -> bool:
    cause = exc.__cause__ or exc.__context__
    return isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if _disk_full(exc):
        # Uploads past 1 MiB are spooled to the temp directory; full, it is not the client's fault.
        log.warning("the temp directory is full: an upload could not be spooled")
        return error_response(507, "the runner's temp directory is full, so the upload could not be stored; retry later", retry_after=5)
    detail = exc.detail if isinstance(exc.detail, str) else "request failed"
    response = styled_response(request, exc.status_code, detail)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return styled_response(request, 500, "internal error; see the runner's log")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RunnerError, _runner_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
