"""What the accelerators are and how busy: livepeer's /hardware/info and /hardware/stats.

Read through torch.cuda (loaded already once the pipeline is; imported here
only when asked, so the app stays torch-free to import) and NVML through
torch where present. On a machine without CUDA both are empty, which is a
valid answer in livepeer's schema.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class GPUComputeInfo(BaseModel):
    id: str
    name: str
    memory_total: int
    memory_free: int
    major: int
    minor: int


class GPUUtilizationInfo(BaseModel):
    id: str
    name: str
    memory_total: int
    memory_free: int
    utilization_compute: int
    utilization_memory: int


def _cuda() -> Any | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda if torch.cuda.is_available() else None


def _device_id(cuda: Any, index: int) -> str:
    uuid = getattr(cuda.get_device_properties(index), "uuid", None)
    return f"GPU-{uuid}" if uuid is not None else str(index)


def compute_info() -> dict[int, GPUComputeInfo]:
    cuda = _cuda()
    if cuda is None:
        return {}
    info = {}
    for index in range(cuda.device_count()):
        free, total = cuda.mem_get_info(index)
        major, minor = cuda.get_device_capability(index)
        info[index] = GPUComputeInfo(
            id=_device_id(cuda, index), name=cuda.get_device_name(index), memory_total=total, memory_free=free, major=major, minor=minor
        )
    return info


def _percent(reader: Any, index: int) -> int:
    """NVML's utilisation through torch; 0 where NVML (pynvml) is not installed."""
    try:
        return int(reader(index))
    except Exception:  # ModuleNotFoundError for pynvml, or an NVML error: report idle, never fail
        return 0


def utilization_stats() -> dict[int, GPUUtilizationInfo]:
    cuda = _cuda()
    if cuda is None:
        return {}
    stats = {}
    for index in range(cuda.device_count()):
        free, total = cuda.mem_get_info(index)
        stats[index] = GPUUtilizationInfo(
            id=_device_id(cuda, index),
            name=cuda.get_device_name(index),
            memory_total=total,
            memory_free=free,
            utilization_compute=_percent(cuda.utilization, index),
            utilization_memory=_percent(getattr(cuda, "memory_usage", lambda _: 0), index),
        )
    return stats
