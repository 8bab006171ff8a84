"""`kubediffusers-runner`: start the HTTP server from the environment."""

from __future__ import annotations

import logging
import sys

from kubediffusers.runner.settings import ConfigurationError, load_settings


def serve() -> int:
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(f"kubediffusers-runner: {exc}", file=sys.stderr)
        return 2

    import uvicorn

    from kubediffusers.runner.app import create_app
    from kubediffusers.runner.logs import configure_logging

    configure_logging(settings.log_level)
    logging.getLogger(__name__).info("serving %s with %s@%s from %s", settings.task.value, settings.model_id, settings.model_revision, settings.model_dir)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_keep_alive=5,
        # Slow clients must not hold a connection open forever.
        h11_max_incomplete_event_size=64 * 1024,
    )
    return 0


if __name__ == "__main__":
    sys.exit(serve())
