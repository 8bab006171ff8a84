"""The complete OpenAPI document: every task's route, as one runner would
serve it if it served them all. `runner/openapi.json` is this, committed."""

from __future__ import annotations

import json
from typing import Any

from pydantic import SecretStr

from kubediffusers.runner.app import create_app
from kubediffusers.runner.routes import served_tasks
from kubediffusers.runner.settings import RunnerSettings, Task


def build_openapi() -> dict[str, Any]:
    # With a token, as a production runner serves it: the guarded routes document the bearer scheme and their 401.
    settings = RunnerSettings(task=Task.TEXT_TO_IMAGE, model_id="org/model", auth_token=SecretStr("documented"))
    app = create_app(settings, tasks=served_tasks(), load_model=False)
    return app.openapi()


def render_openapi() -> str:
    return json.dumps(build_openapi(), indent=2, sort_keys=True) + "\n"
