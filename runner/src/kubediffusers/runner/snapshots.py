"""Where a fetched repository lies in the cache: one code path for the model and every add-on.

The fetch init container writes a completion marker for each repository it
fetched (model, tiny VAE, LoRA adapters, safety checker); the runner finds each
one's snapshot through that marker, which proves every selected file arrived
and names the commit. ``huggingface_hub.snapshot_download(local_files_only=True)``
is never used: it refuses a snapshot that lacks files the fetcher skipped on
purpose (README.md, pickled weights), which is every real one.

A cache filled by other means (``hf download``, a copied volume) has no marker:
the revision is then resolved through the cache's own ``refs/<revision>``
file (or taken as a commit), and the snapshot folder must exist. Nothing here
touches the network, and this module is pure standard library.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kubediffusers.runner.errors import ModelUnavailable
from kubediffusers.runner.fetch.marker import read_marker, repo_folder

_COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class Located:
    path: Path  # the snapshot folder to load from
    commit: str
    marked: bool  # found through the fetcher's marker (every selected file checked present)


def locate(model_dir: Path, repo_id: str, revision: str = "main", variant: str | None = None, *, what: str = "model") -> Located:
    """The snapshot of ``repo_id@revision`` in the cache, or ModelUnavailable saying what is missing."""
    if not Path(model_dir).is_dir():
        raise ModelUnavailable(f"model directory {model_dir} does not exist")
    marker = read_marker(model_dir, repo_id, revision, variant)
    if marker is not None:
        return Located(marker.snapshot_path, marker.resolved_commit, marked=True)
    repo = repo_folder(model_dir, repo_id)
    commit = revision if _COMMIT.fullmatch(revision) else _read_ref(repo, revision)
    snapshot = repo / "snapshots" / commit if commit else None
    if snapshot is None or not snapshot.is_dir():
        raise ModelUnavailable(
            f"{what} {repo_id}@{revision} is not in the cache at {model_dir}: no completion marker and no snapshot "
            "(the fetch init container, kubediffusers-fetch, downloads it)"
        )
    return Located(snapshot, snapshot.name, marked=False)


def _read_ref(repo: Path, revision: str) -> str | None:
    if ".." in revision.split("/"):
        return None  # a revision never leaves refs/
    try:
        commit = (repo / "refs" / revision).read_text().strip()
    except (OSError, ValueError):
        return None
    return commit if _COMMIT.fullmatch(commit) else None
