"""livepeer ai-runner (v0.14.1) compatibility: its defaults, aliases and statuses.

go-livepeer's generated client (ai/worker/runner.gen.go) parses only the
statuses livepeer's spec declares for a route: 200, 400, 401, 422 and 500 for
the generation routes. On any other (our 503 for a full queue, a model not
ready or a GPU out of memory; 504; 413) its worker returns an empty result and
the orchestrator dereferences it. With ``compatibility: livepeer`` the runner
answers those as the declared status of the same class (4xx -> 400,
5xx -> 500), with the same body and headers (Retry-After stays), and livepeer's
request defaults apply where they differ from ours.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kubediffusers.runner.params import TaskParams
from kubediffusers.runner.tasks import TASKS, Api, TaskSpec

# livepeer's runner/openapi.yaml: every generation route declares these (202: our async
# jobs, which only a client that asks with Prefer: respond-async ever gets).
DECLARED_STATUSES = frozenset({200, 202, 400, 401, 422, 500})


def aliases(spec: TaskSpec) -> list[str]:
    """livepeer's other paths for the task's route (its trailing-slash twins)."""
    return [route.path for route in spec.compat_routes(Api.LIVEPEER) if route.path != spec.path]


def apply_defaults(spec: TaskSpec, params: TaskParams) -> None:
    """livepeer's defaults (steps, fps, sizes, decode chunks) for fields the request left unset."""
    for route in spec.compat_routes(Api.LIVEPEER):
        for name, value in route.defaults:
            if name not in params.model_fields_set:
                setattr(params, name, value)
                # Still a default: check_limits caps defaults at the runner's limits.
                params.model_fields_set.discard(name)


def declared_status(status: int) -> int:
    if status in DECLARED_STATUSES:
        return status
    return 400 if 400 <= status < 500 else 500


def livepeer_paths() -> frozenset[str]:
    """Every path livepeer defines that this runner's generation routes answer."""
    return frozenset(path for spec in TASKS.values() if spec.compat_routes(Api.LIVEPEER) for path in (spec.path, *aliases(spec)))


class DeclaredStatuses:
    """ASGI middleware: on livepeer's paths, a status livepeer does not declare
    becomes the declared one of its class. Outside the body limits, so their
    413 and 408 are mapped too; the metrics (inside) still count the real status."""

    def __init__(self, app: ASGIApp, paths: frozenset[str]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return

        async def mapped_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "status": declared_status(message["status"])}
            await send(message)

        await self.app(scope, receive, mapped_send)
