"""The runner's layering: the app loads no torch until a model loads, and the
task registry is the one table the routes, pipelines and tiny models follow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kubediffusers.runner.dev.tiny import DEFAULT_ARCHITECTURE
from kubediffusers.runner.openapi import build_openapi
from kubediffusers.runner.params import TaskParams
from kubediffusers.runner.pipelines import pipeline_class
from kubediffusers.runner.settings import Task
from kubediffusers.runner.tasks import TASKS

HEAVY = ("torch", "diffusers", "transformers")


def test_the_app_loads_no_torch_until_a_model_loads() -> None:
    # A fresh interpreter: this test process has imported torch long ago.
    code = (
        "import sys\n"
        "from kubediffusers.runner.app import create_app\n"
        "from kubediffusers.runner.settings import RunnerSettings\n"
        "create_app(RunnerSettings(task='image-to-video', model_id='org/model'), load_model=False)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_every_task_has_one_row_and_the_routes_follow_it() -> None:
    assert list(TASKS) == list(Task)
    paths = build_openapi()["paths"]
    for task, spec in TASKS.items():
        operation = paths[spec.path]["post"]
        assert operation["operationId"] == spec.operation_id and operation["summary"] == spec.summary
        content = operation["requestBody"]["content"]
        assert list(content) == (["multipart/form-data"] if spec.uploads else ["application/json"])
        assert issubclass(spec.params, TaskParams)
        assert pipeline_class(task).task is task
        assert DEFAULT_ARCHITECTURE[task] == spec.tiny_arch


def test_uploads_are_the_params_models_file_fields() -> None:
    assert TASKS[Task.INPAINTING].uploads == ["image", "mask_image"]
    assert TASKS[Task.TEXT_TO_IMAGE].uploads == []


def test_the_import_graph_has_no_circles_and_no_upward_imports() -> None:
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, str(root / "hack" / "import_graph.py")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "circles: 0" in result.stdout and "runner upward imports: 0" in result.stdout, result.stdout
