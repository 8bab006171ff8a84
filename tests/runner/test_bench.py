"""The benchmark CLI's tools on the tiny model (the arch tool: test_archs.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.runner.helpers import free_port

BENCH = [sys.executable, "-m", "kubediffusers.runner.dev.bench"]


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([*BENCH, *args], capture_output=True, text=True, timeout=300, env=env, check=False)


def test_pipeline_and_serving_print_their_figures(model_dir: Path) -> None:
    common = ["--tiny", "--model-dir", str(model_dir), "--runs", "2", "--steps", "1"]
    result = bench("pipeline", *common)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pipeline load time:" in result.stdout and "average time per output:" in result.stdout
    result = bench("serving", *common, "--configs", "64:1", "--port", str(free_port()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "overhead ratio" in result.stdout


def test_bad_invocations_say_why_in_one_line() -> None:
    result = bench("serving", "--task", "upscale", "--tiny", "--runs", "2")
    assert result.returncode == 1 and result.stderr.strip() == "kubediffusers-bench: serving measures the text-to-image route"
    result = bench("pipeline", "--runs", "2")
    assert result.returncode == 1 and result.stderr.strip() == "kubediffusers-bench: --model-id is required unless --tiny is given"
    assert bench("pipeline", "--runs", "1").returncode == 2
    assert bench().returncode == 2


def test_output_measures_another_checkout_side_by_side() -> None:
    """--baseline serves the same stub from another checkout (here this one), its requests
    alternating with ours in every run; a folder that is no checkout is one line."""
    root = Path(__file__).resolve().parents[2]
    small = ["--runs", "2", "--clients", "2", "--max-batch-size", "2", "--call-ms", "2", "--image-ms", "1", "--port", str(free_port())]
    result = bench("output", *small, "--rounds", "3", "--baseline", str(root))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if " batch " in line and "serving cost" in line and "idle" not in line]
    assert len(rows) == 6 and all(
        "; baseline HTTP median" in row and "this - baseline" in row and re.search(r"\(event loop \d+\.\d+, other threads -?\d+\.\d+\)", row) for row in rows
    ), result.stdout
    assert re.search(r"after idle time: .*: 0 ms: -?\d+\.\d+, 4 ms: -?\d+\.\d+, 10 ms: -?\d+\.\d+ ms", result.stdout), result.stdout
    assert "jpeg q90 from pixels (runner)" in result.stdout and f"baseline: the stub server of {root}" in result.stdout
    throughput = next(line for line in result.stdout.splitlines() if line.startswith("throughput, stub pipeline"))
    assert re.search(r"% of the pipeline's own \(median; rounds \d+%, \d+%, \d+%\); calls by images: <=\d+: \d+", throughput), throughput
    assert bench("output", "--rounds", "0").returncode == 2
    result = bench("output", *small, "--baseline", str(root / "docs"))
    assert (
        result.returncode == 1 and result.stderr.strip().startswith("kubediffusers-bench: --baseline ") and "is not a kubediffusers checkout" in result.stderr
    )


def test_block_costs_show_how_far_the_figure_drifts_within_a_run() -> None:
    from kubediffusers.runner.dev.bench.output import block_costs

    http = [4.0] * 10 + [5.0] * 10 + [4.0] * 10 + [6.0] * 10 + [4.0] * 10
    direct = [1.0] * 50
    assert block_costs(http, direct, 1) == [3.0, 4.0, 3.0, 5.0, 3.0]
    assert block_costs(http, direct, 2) == [1.5, 2.0, 1.5, 2.5, 1.5]  # per image
    assert block_costs(http[:9], direct[:9], 1) == []  # under two runs a fifth: no figure
