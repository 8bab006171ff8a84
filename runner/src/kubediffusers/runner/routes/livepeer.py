"""livepeer ai-runner's endpoints beyond the generation routes: /version,
/hardware/info, /hardware/stats and /health/ (its trailing-slash twin).

go-livepeer reads /version to advertise the runner's version (0.0.0 without
it, which gateways with a minimum runner version refuse) and polls /health.
Open like /health: they say nothing a caller could abuse.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from pydantic import BaseModel

from kubediffusers.runner import __version__, hardware
from kubediffusers.runner.context import Context
from kubediffusers.runner.routes.health import Health, health_of

router = APIRouter(tags=["livepeer"])


class Version(BaseModel):
    pipeline: str
    model_id: str
    version: str


class HardwareInformation(BaseModel):
    pipeline: str
    model_id: str
    gpu_info: dict[int, hardware.GPUComputeInfo]


class HardwareStats(BaseModel):
    pipeline: str
    model_id: str
    gpu_stats: dict[int, hardware.GPUUtilizationInfo]


@router.get("/version", summary="Task, model and runner version (livepeer ai-runner's /version)", operation_id="version")
@router.get("/version/", include_in_schema=False)
async def version(ctx: Context) -> Version:
    return Version(pipeline=ctx.settings.task.value, model_id=ctx.settings.model_id, version=__version__)


@router.get("/hardware/info", summary="GPUs: name, memory, compute capability (empty without CUDA)", operation_id="hardware_info")
@router.get("/hardware/info/", include_in_schema=False)
async def hardware_info(ctx: Context) -> HardwareInformation:
    info = await asyncio.to_thread(hardware.compute_info)
    return HardwareInformation(pipeline=ctx.settings.task.value, model_id=ctx.settings.model_id, gpu_info=info)


@router.get("/hardware/stats", summary="GPUs: free memory and utilisation (empty without CUDA)", operation_id="hardware_stats")
@router.get("/hardware/stats/", include_in_schema=False)
async def hardware_stats(ctx: Context) -> HardwareStats:
    stats = await asyncio.to_thread(hardware.utilization_stats)
    return HardwareStats(pipeline=ctx.settings.task.value, model_id=ctx.settings.model_id, gpu_stats=stats)


@router.get("/health/", include_in_schema=False)
async def health_slash(ctx: Context) -> Health:
    return health_of(ctx)
