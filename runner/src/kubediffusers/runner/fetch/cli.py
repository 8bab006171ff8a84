"""``kubediffusers-fetch``: the init container's entry point.

Exit status 0 after a complete snapshot (the termination message is then
``resolved <commit sha>``); otherwise one line ``<Reason>: <explanation>`` on
stderr and in the termination message, and the exit code of
:mod:`kubediffusers.runner.fetch.errors` (2 for an invalid configuration).
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from .errors import EXIT_FAILED, EXIT_OK, FetchError, one_line

DEFAULT_TERMINATION_LOG = Path("/dev/termination-log")
TERMINATION_MESSAGE_LIMIT = 4096  # bytes Kubernetes keeps


def write_termination_message(path: Path | None, text: str) -> None:
    """Best effort: the file exists in a Kubernetes container; elsewhere this may fail quietly."""
    if path is None:
        return
    try:
        data = text.encode("utf-8")[:TERMINATION_MESSAGE_LIMIT]
        with open(path, "wb") as f:
            f.write(data)
    except OSError as exc:
        if path != DEFAULT_TERMINATION_LOG:
            print(f"note: could not write the termination message to {path}: {exc.strerror}", flush=True)


def _token() -> str | None:
    from huggingface_hub import get_token

    return get_token() or None


def _configure_hub_output(bars: str) -> None:
    """huggingface_hub's own bars only on a terminal; its logging quiet (the fetcher prints its own lines)."""
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars
    from huggingface_hub.utils import logging as hf_logging

    show = bars == "always" or (bars == "auto" and sys.stderr.isatty())
    if show:
        enable_progress_bars()
    else:
        disable_progress_bars()
    hf_logging.set_verbosity_error()
    # huggingface_hub warns on low disk space; the fetcher checks and reports it itself
    warnings.filterwarnings("ignore", module=r"huggingface_hub(\..*)?")


def main(argv: list[str] | None = None) -> int:
    # Before huggingface_hub is imported (it reads its settings then): no user-agent telemetry, which also
    # spares the init container a request for huggingface_hub's agent registry. Set it to 0 to opt back in.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from .config import load
    from .guard import GUARD
    from .redact import REDACT

    termination_log: Path | None = Path(os.environ.get("KUBEDIFFUSERS_FETCH_TERMINATION_LOG") or DEFAULT_TERMINATION_LOG)
    token: str | None = None
    REDACT.add_url(os.environ.get("HF_ENDPOINT") or "")
    GUARD.termination_log, GUARD.write_termination = termination_log, write_termination_message
    try:
        settings, args = load(argv)
        termination_log = GUARD.termination_log = settings.fetch_termination_log
        GUARD.arm(settings.fetch_deadline_seconds)  # from here on, SIGTERM and the deadline end the fetch cleanly
        _configure_hub_output(settings.fetch_progress_bars)
        from . import http

        http.install(connect=settings.fetch_connect_timeout_seconds, read=settings.fetch_read_timeout_seconds)
        token = _token()
        from .core import Console, fetch

        console = Console(secret=token)
        result = fetch(settings, console, token=token, dry_run=args.dry_run)
        for add_on in settings.add_ons():
            # The tiny VAE, LoRA adapters, the safety checker: repositories of their own, each with its marker.
            console.say(f"add-on: {add_on.kind} {add_on.repo_id}@{add_on.revision}")
            fetch(settings.for_add_on(add_on), console, token=token, dry_run=args.dry_run)
    except FetchError as exc:
        return _fail(exc.line(), exc.exit_code, termination_log, token)
    except KeyboardInterrupt:
        return _fail("Interrupted: the fetch was interrupted", 130, termination_log, token)
    except Exception as exc:
        return _fail(one_line(f"FetchFailed: {type(exc).__name__}: {exc}"), EXIT_FAILED, termination_log, token)
    finally:
        GUARD.disarm()

    if result is None:  # dry run
        return EXIT_OK
    m = result.marker
    console.say(
        f"done: {m.model_id}@{m.revision} is commit {m.resolved_commit},"
        f" {len(m.files)} files in {m.snapshot_path}" + ("" if result.downloaded else " (nothing to download)")
    )
    write_termination_message(termination_log, f"resolved {m.resolved_commit}")
    return EXIT_OK


def _fail(line: str, code: int, termination_log: Path | None, token: str | None) -> int:
    from .redact import REDACT

    REDACT.add(token)
    line = REDACT(line)
    print(line, file=sys.stderr, flush=True)
    write_termination_message(termination_log, line)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
