"""Polling async jobs: GET /jobs/{id} for the state, /jobs/{id}/result for
the answer the synchronous call would have given (PNG or mp4 with Accept),
DELETE /jobs/{id} to cancel one or forget its result.

With shared jobs (``jobfiles``), a job this replica does not hold in memory is
read from the shared directory: every replica answers for every job.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response

from kubediffusers.runner.context import Context, RunnerContext
from kubediffusers.runner.errors import JobNotFinished, JobNotFound, JobStorageFailed, error_response
from kubediffusers.runner.jobfiles import CANCEL_WAIT_SECONDS, POLL_SECONDS, StoredJob, valid_id
from kubediffusers.runner.jobs import AsyncJob, JobState, JobStore, job_state, stored_job_state
from kubediffusers.runner.routes.delivery import FORMATS, accepts, kept_mp4_response
from kubediffusers.runner.routes.docs import ERROR_RESPONSES
from kubediffusers.runner.tasks import spec_of

router = APIRouter(tags=["jobs"])

MP4_TYPE = "video/mp4"
JobId = Annotated[str, Path(min_length=1, max_length=64, description="The id from the 202 answer's Location header.")]


def find(store: JobStore, job_id: str) -> AsyncJob:
    """A job this replica holds in memory (all of them without shared jobs)."""
    if not valid_id(job_id):  # before any lookup: an id is never part of a path unchecked
        raise JobNotFound(f"no job {job_id!r}: a job id is 1 to 64 letters, digits, '-' or '_', as the 202 answer's Location gives it")
    record = store.get(job_id)
    if record is None:
        why = store.forgotten(job_id)
        if why is not None:
            raise JobNotFound(f"job {job_id!r} was forgotten: {why}")
        raise JobNotFound(f"no job {job_id!r}: it never existed here, or it was forgotten long ago (jobs live in the runner replica that accepted them)")
    return record


async def lookup(ctx: RunnerContext, job_id: str, *, with_result: bool = True) -> AsyncJob | StoredJob:
    """The job, from this replica's memory or, with shared jobs, from the shared directory."""
    store = ctx.jobs
    if store.files is None:
        return find(store, job_id)
    if not valid_id(job_id) or store.get(job_id) is not None:
        return find(store, job_id)
    files = store.files
    stored = await store.on_disk(store.read_shared, job_id) if with_result else await store.on_disk(files.read, job_id, with_result=False)
    if stored is not None and stored.state.get("task") == ctx.settings.task.value:
        return stored
    why = store.forgotten(job_id) or await store.on_disk(files.gone, job_id)
    if why is not None:
        raise JobNotFound(f"job {job_id!r} was forgotten: {why}")
    raise JobNotFound(f"no job {job_id!r}: it never existed, or it was forgotten long ago")


def state_of(ctx: RunnerContext, job: AsyncJob | StoredJob) -> JobState:
    return stored_job_state(job, ctx.jobs.ttl_seconds) if isinstance(job, StoredJob) else job_state(job, ctx.jobs)


@router.get(
    "/jobs/{job_id}",
    summary="State of an async job: queued, running (step i of n), done (with the result) or failed",
    responses={
        404: ERROR_RESPONSES[400] | {"description": "Unknown or forgotten job (the message says why)"},
        401: ERROR_RESPONSES[401],
        422: ERROR_RESPONSES[422],
        503: ERROR_RESPONSES[503] | {"description": "Shared jobs: the shared job directory could not be read or written (see Retry-After)"},
    },
    operation_id="get_job",
)
async def get_job(job_id: JobId, ctx: Context) -> JobState:
    return state_of(ctx, await lookup(ctx, job_id))


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
        503: ERROR_RESPONSES[503] | {"description": "Shared jobs: the shared job directory could not be read or written (see Retry-After)"},
    },
    operation_id="get_job_result",
)
async def get_job_result(job_id: JobId, request: Request, ctx: Context) -> Response:
    store = ctx.jobs
    found = await lookup(ctx, job_id)
    if isinstance(found, StoredJob):
        return await stored_result(ctx, request, found)
    record = found
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


async def stored_result(ctx: RunnerContext, request: Request, stored: StoredJob) -> Response:
    """``get_job_result`` of a job read from the shared directory."""
    state = stored_job_state(stored, ctx.jobs.ttl_seconds)
    if state.error is not None:
        return error_response(state.error.status_code, state.error.msg)
    if state.status != "done" or stored.result is None:
        progress = f" (step {state.step} of {state.total_steps})" if state.total_steps else ""
        raise JobNotFinished(f"job {state.id} is {state.status}{progress}; poll GET /jobs/{state.id}")
    store, files = ctx.jobs, ctx.jobs.files
    assert files is not None
    video = "frames" in stored.result and accepts(request, MP4_TYPE)
    if video and (kept := await store.on_disk(files.read_derived, state.id)) is not None:
        return kept_mp4_response(stored.result, kept)  # made by the first GET, through whichever replica: never encoded twice
    output = FORMATS[spec_of(ctx.settings.task).output]
    response: Response = await asyncio.to_thread(output.from_body, request, stored.result, stored.state.get("fps"))
    if video and response.media_type == MP4_TYPE:
        # Kept beside the job (counted in the byte bound, removed with it); a failed write only costs a later encode.
        with contextlib.suppress(JobStorageFailed):
            await store.on_disk(files.write_derived, state.id, bytes(response.body))
    return response


@router.delete(
    "/jobs/{job_id}",
    summary="Cancel an unfinished job (it then reads as failed), or forget a finished one",
    response_model=None,
    responses={
        200: {"model": JobState, "description": "The job was cancelled; it is kept, as failed, until it expires."},
        202: {
            "model": JobState,
            "description": "Shared jobs: the cancel request is filed, but the replica running the job did not confirm it in time; poll GET /jobs/{id}.",
        },
        204: {"description": "The finished job and its result were forgotten."},
        404: ERROR_RESPONSES[400] | {"description": "Unknown or forgotten job (the message says why)"},
        401: ERROR_RESPONSES[401],
        422: ERROR_RESPONSES[422],
        503: ERROR_RESPONSES[503] | {"description": "Shared jobs: the shared job directory could not be read or written (see Retry-After)"},
    },
    operation_id="delete_job",
)
async def delete_job(job_id: JobId, ctx: Context) -> Response:
    store = ctx.jobs
    found = await lookup(ctx, job_id, with_result=False)
    if isinstance(found, StoredJob):
        return await delete_stored(ctx, found)
    record = found
    if record.finished_at is not None:
        store.forget(record)
        return Response(status_code=204)
    store.cancel(record)
    return JSONResponse(job_state(record, store).model_dump())


async def delete_stored(ctx: RunnerContext, stored: StoredJob) -> Response:
    """``delete_job`` of a job read from the shared directory: forget it, or ask its owner to cancel it and wait for the answer."""
    store, files = ctx.jobs, ctx.jobs.files
    assert files is not None
    job_id = stored.state["id"]
    if stored.finished:
        await store.on_disk(files.forget, job_id, f"it was deleted with DELETE /jobs/{job_id}")
        return Response(status_code=204)
    await store.on_disk(files.request_cancel, job_id)
    # The owner looks for the request every POLL_SECONDS; a busy file system may take longer.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CANCEL_WAIT_SECONDS
    while True:
        current = await store.on_disk(files.read, job_id, with_result=False)
        if current is None or current.finished or loop.time() >= deadline:
            break
        await asyncio.sleep(POLL_SECONDS / 5)
    if current is not None and current.finished:
        return JSONResponse(stored_job_state(current, ctx.jobs.ttl_seconds).model_dump())
    return JSONResponse(stored_job_state(current or stored, ctx.jobs.ttl_seconds).model_dump(), status_code=202)
