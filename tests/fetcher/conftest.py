"""Fixtures of the fetcher tests; the Hub stand-in itself lives in fetch_standin.py."""

from .fetch_standin import fetch_env, hub, in_process, run  # noqa: F401  (fixtures)
