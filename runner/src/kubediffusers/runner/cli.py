"""`kubediffusers-runner`: start the HTTP server from the environment."""

from __future__ import annotations

import logging
import sys
import tempfile

from kubediffusers.runner.settings import ConfigurationError, load_settings


def serve() -> int:
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(f"kubediffusers-runner: {exc}", file=sys.stderr)
        return 2

    from kubediffusers.runner.logs import configure_logging
    from kubediffusers.runner.server import serve as serve_http

    configure_logging(settings.log_level)
    # Fix the temp directory (uploads past 1 MiB spool there) while it is writable: Python picks it
    # on first use, and skips a full one for the next candidate, so a full /tmp would otherwise
    # spill uploads elsewhere, or fail as "no usable temporary directory" instead of a clear 507.
    tempfile.gettempdir()
    logging.getLogger(__name__).info("serving %s with %s@%s from %s", settings.task.value, settings.model_id, settings.model_revision, settings.model_dir)
    serve_http(settings)
    return 0


if __name__ == "__main__":
    sys.exit(serve())
