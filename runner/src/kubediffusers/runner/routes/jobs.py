"""Polling async jobs: GET /jobs/{id} for the state, /jobs/{id}/result for
the answer the synchronous call would have given (PNG or mp4 with Accept),
DELETE /jobs/{id} to cancel one or forget its result."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response

from kubediffusers.runner.context import Context
from kubediffusers.runner.errors import JobNotFinished, JobNotFound, error_response
from kubediffusers.runner.jobs import AsyncJob, JobState, JobStore, job_state
from kubediffusers.runner.routes.delivery import accepts
from kubediffusers.runner.routes.docs import ERROR_RESPONSES

router = APIRouter(tags=["jobs"])

JobId = Annotated[str, Path(min_length=1, max_length=64, description="The id from the 202 answer's Location header.")]


def find(store: JobStore, job_id: str) -> AsyncJob:
    record = store.get(job_id)
    if record is None:
        why = store.forgotten(job_id)
        if why is not None:
            raise JobNotFound(f"job {job_id!r} was forgotten: {why}")
        raise JobNotFound(f"no job {job_id!r}: it never existed here, or it was forgotten long ago (jobs live in the runner replica that accepted them)")
    return record


@router.get(
    "/jobs/{job_id}",
    summary="State of an async job: queued, running (step i of n), done (with the result) or failed",
    responses={
        404: ERROR_RESPONSES[400] | {"description": "Unknown or forgotten job (the message says why)"},
        401: ERROR_RESPONSES[401],
        422: ERROR_RESPONSES[422],
    },
    operation_id="get_job",
)
async def get_job(job_id: JobId, ctx: Context) -> JobState:
    return job_state(find(ctx.jobs, job_id), ctx.jobs)


@router.get(
    "/jobs/{job_id}/result",
    summary="The result of a finished job, exactly as the synchronous call answers (honours Accept)",
    response_model=None,
    responses={
        200: {"description": "The synchronous call's answer: JSON, or PNG / mp4 with Accept."},
        404: ERROR_RESPONSES[400] | {"description": "Unknown or forgotten job (the message says why)"},
        409: ERROR_RESPONSES[400] | {"description": "The job is still queued or running"},
        410: ERROR_RESPONSES[400] | {"description": "The job was cancelled with DELETE"},
        "4XX": ERROR_RESPONSES[400] | {"description": "A failed job answers what the synchronous call would have (400, 503, ...)"},
        401: ERROR_RESPONSES[401],
        422: ERROR_RESPONSES[422],
    },
    operation_id="get_job_result",
)
async def get_job_result(job_id: JobId, request: Request, ctx: Context) -> Response:
    store = ctx.jobs
    record = find(store, job_id)
    if record.error is not None:
        # A failed job answers what the synchronous call would have answered.
        return error_response(record.error.status_code, record.error.msg)
    if record.finished_at is None or record.respond is None:
        state = job_state(record, store)
        progress = f" (step {state.step} of {state.total_steps})" if state.total_steps else ""
        raise JobNotFinished(f"job {job_id} is {state.status}{progress}; poll GET /jobs/{job_id}")
    for media_type, kept in record.raw.items():
        if accepts(request, media_type):
            return kept  # a raw answer (an mp4) is made once, not on every GET
    response: Response = await asyncio.to_thread(record.respond, request, record.body)
    if not isinstance(response, JSONResponse) and response.media_type is not None:
        record.raw[response.media_type] = response
        store.account(record, len(response.body))
    return response


@router.delete(
    "/jobs/{job_id}",
    summary="Cancel an unfinished job (it then reads as failed), or forget a finished one",
    response_model=None,
    responses={
        200: {"model": JobState, "description": "The job was cancelled; it is kept, as failed, until it expires."},
        204: {"description": "The finished job and its result were forgotten."},
        404: ERROR_RESPONSES[400] | {"description": "Unknown or forgotten job (the message says why)"},
        401: ERROR_RESPONSES[401],
        422: ERROR_RESPONSES[422],
    },
    operation_id="delete_job",
)
async def delete_job(job_id: JobId, ctx: Context) -> Response:
    store = ctx.jobs
    record = find(store, job_id)
    if record.finished_at is not None:
        store.forget(record)
        return Response(status_code=204)
    store.cancel(record)
    return JSONResponse(job_state(record, store).model_dump())
