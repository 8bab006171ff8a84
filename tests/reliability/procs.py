"""A real `kubediffusers-runner` process on a real socket, with what the
reliability checks read from outside: psutil's view of its memory, threads and
file descriptors. Shared by tests/reliability and hack/reliability.py."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
from PIL import Image

from kubediffusers.runner.dev.tiny import ensure_tiny_model, tiny_model_id

QUEUE = 4  # KUBEDIFFUSERS_MAX_QUEUE_SIZE of the shared text-to-image runner (conftest); the load tests count on it

RUNNER = Path(sys.executable).parent / "kubediffusers-runner"

# Every request the limits accept is cheap on a CPU: at most 2 steps, 64x64, one image.
CHEAP_LIMITS = {
    "KUBEDIFFUSERS_MAX_STEPS": "2",
    "KUBEDIFFUSERS_MAX_PIXELS": str(64 * 64),
    "KUBEDIFFUSERS_MAX_IMAGES_PER_REQUEST": "1",
    "KUBEDIFFUSERS_MAX_UPLOAD_PIXELS": str(1024 * 1024),
    "KUBEDIFFUSERS_MAX_UPLOAD_BYTES": str(2 * 1024 * 1024),
    "KUBEDIFFUSERS_MAX_VIDEO_FRAMES": "2",
}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def png_bytes(size: tuple[int, int] = (64, 64), color: tuple[int, int, int] = (10, 20, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Sample:
    rss: int
    threads: int
    fds: int


class RunnerProcess:
    """``with RunnerProcess(model_dir, task) as runner:`` a ready runner on 127.0.0.1.

    Its combined stdout/stderr goes to a file (``runner.output()``), never a pipe
    that nobody drains, so a chatty run cannot block the process.
    """

    def __init__(
        self, model_dir: Path, task: str = "text-to-image", *, env: dict[str, str] | None = None, cheap: bool = True, command: list[str] | None = None
    ) -> None:
        self.model_dir = Path(model_dir)
        self.task = task
        self.command = command or [str(RUNNER)]  # another launcher of the same entry point (tests that shorten a constant)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**(CHEAP_LIMITS if cheap else {}), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix=f"runner-{task}-", suffix=".log", delete=False)  # noqa: SIM115

    def __enter__(self) -> RunnerProcess:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def start(self) -> None:
        """Start the process without waiting for it to be ready."""
        ensure_tiny_model(self.task, self.model_dir)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBEDIFFUSERS_")}
        env.update(
            KUBEDIFFUSERS_TASK=self.task,
            KUBEDIFFUSERS_MODEL_ID=tiny_model_id(self.task),
            KUBEDIFFUSERS_MODEL_DIR=str(self.model_dir),
            KUBEDIFFUSERS_DEVICE="cpu",
            KUBEDIFFUSERS_HOST="127.0.0.1",
            KUBEDIFFUSERS_PORT=str(self.port),
            KUBEDIFFUSERS_LOG_LEVEL="warning",
            # One intra-op thread each for torch: the test machines have 2 cores.
            OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
        )
        env.update(self.env)
        self.proc = subprocess.Popen(self.command, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def output(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.alive(), f"the runner exited:\n{self.output()[-4000:]}"
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the runner was not ready within {timeout}s:\n{self.output()[-4000:]}")

    def sample(self) -> Sample:
        assert self.proc is not None
        p = psutil.Process(self.proc.pid)
        return Sample(rss=p.memory_info().rss, threads=p.num_threads(), fds=p.num_fds())

    # ---- a request that must succeed

    def good_request(self, client: httpx.Client | None = None, **headers: str) -> httpx.Response:
        """One valid, cheap generation for this runner's task."""
        send = client or httpx.Client(timeout=120)
        try:
            if self.task == "text-to-image":
                r = send.post(self.url + "/text-to-image", json={"prompt": "a lighthouse", "num_inference_steps": 1, "seed": 1}, headers=headers)
            else:
                data = {"prompt": "a lighthouse", "num_inference_steps": "2", "seed": "1"}
                r = send.post(self.url + f"/{self.task}", data=data, files={"image": ("in.png", png_bytes(), "image/png")}, headers=headers)
        finally:
            if client is None:
                send.close()
        return r


@contextmanager
def shared_job_replicas(
    models: Path, task: str, jobs_dir: Path, env: dict[str, str] | None = None, command: list[str] | None = None
) -> Iterator[tuple[RunnerProcess, RunnerProcess]]:
    """Two runner processes of ``task`` whose async jobs are files in one ``jobs_dir``, as two replicas on one claim."""
    shared = {"KUBEDIFFUSERS_SHARED_JOBS": "true", "KUBEDIFFUSERS_JOBS_DIR": str(jobs_dir), "KUBEDIFFUSERS_DRAIN_SECONDS": "1", **(env or {})}
    a, b = RunnerProcess(models, task, env=shared, command=command), RunnerProcess(models, task, env=shared, command=command)
    try:
        a.start()
        b.start()
        a.wait_ready()
        b.wait_ready()
        yield a, b
    finally:
        a.stop()
        b.stop()


def decode_first_image(body: dict[str, Any]) -> Image.Image:
    data = body["images"][0]["url"].split(",", 1)[1]
    return Image.open(io.BytesIO(base64.b64decode(data)))
