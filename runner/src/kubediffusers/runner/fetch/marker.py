"""The completion marker: proof that a snapshot was fully downloaded.

After every selected file is in the cache, the fetcher writes (atomically:
temporary file, fsync, rename) a small JSON file next to the cache's own
``blobs/``, ``refs/`` and ``snapshots/`` folders::

    <model_dir>/models--<org>--<name>/kubediffusers-complete-<revision>[-<variant>].json

It records what was asked (model id, revision, variant, pattern overrides), what
it resolved to (the commit sha) and which files the snapshot holds. A second
fetch with the same inputs, and the runner, read it without any network call.

This module is pure standard library: the runner imports :func:`read_marker`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

MARKER_FORMAT = 1
MARKER_PREFIX = "kubediffusers-complete-"


def repo_folder(model_dir: Path, model_id: str) -> Path:
    """The Hugging Face cache folder of a model repository (``models--org--name``)."""
    return Path(model_dir) / ("models--" + "--".join(model_id.split("/")))


def _safe(text: str) -> str:
    """A file-name-safe spelling of ``text``; a short hash keeps distinct inputs distinct."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", text)
    if safe != text or safe.startswith("."):
        safe = f"{safe.lstrip('.')}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
    return safe


def marker_path(model_dir: Path, model_id: str, revision: str, variant: str | None) -> Path:
    name = MARKER_PREFIX + _safe(revision) + (f"-{_safe(variant)}" if variant else "") + ".json"
    return repo_folder(model_dir, model_id) / name


@dataclass(frozen=True)
class MarkerFile:
    path: str
    size: int
    #: the Hub's sha256 of the file (LFS files), checked after the download; None when the Hub gives none
    sha256: str | None = None


@dataclass(frozen=True)
class Marker:
    model_id: str
    revision: str
    variant: str | None
    resolved_commit: str
    files: tuple[MarkerFile, ...]
    completed_at: str
    allow_patterns: tuple[str, ...] | None = None
    ignore_patterns: tuple[str, ...] | None = None
    task: str | None = None
    endpoint: str | None = None
    total_bytes: int = 0
    format: int = MARKER_FORMAT
    #: the cache directory it was read from (not stored in the file)
    model_dir: Path = field(default=Path("/models"), compare=False)

    @property
    def snapshot_path(self) -> Path:
        """``<model_dir>/models--org--name/snapshots/<resolved commit>``: load the pipeline from here."""
        return repo_folder(self.model_dir, self.model_id) / "snapshots" / self.resolved_commit

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("model_dir")
        data["files"] = [asdict(f) for f in self.files]
        data["allow_patterns"] = list(self.allow_patterns) if self.allow_patterns is not None else None
        data["ignore_patterns"] = list(self.ignore_patterns) if self.ignore_patterns is not None else None
        return data

    @classmethod
    def from_json(cls, data: dict, model_dir: Path) -> Marker:
        def _tuple(value: object) -> tuple[str, ...] | None:
            return tuple(str(v) for v in value) if isinstance(value, list) else None

        return cls(
            model_id=str(data["model_id"]),
            revision=str(data["revision"]),
            variant=data.get("variant") or None,
            resolved_commit=str(data["resolved_commit"]),
            files=tuple(MarkerFile(path=str(f["path"]), size=int(f["size"]), sha256=f.get("sha256") or None) for f in data["files"]),
            completed_at=str(data.get("completed_at", "")),
            allow_patterns=_tuple(data.get("allow_patterns")),
            ignore_patterns=_tuple(data.get("ignore_patterns")),
            task=data.get("task"),
            endpoint=data.get("endpoint"),
            total_bytes=int(data.get("total_bytes", 0)),
            format=int(data.get("format", MARKER_FORMAT)),
            model_dir=Path(model_dir),
        )

    def missing_files(self) -> list[str]:
        """Files recorded in the marker that are absent from the snapshot or have another size."""
        missing = []
        for f in self.files:
            p = self.snapshot_path / f.path
            try:
                if not p.is_file() or p.stat().st_size != f.size:  # follows the snapshot's symlink to the blob
                    missing.append(f.path)
            except OSError:
                missing.append(f.path)
        return missing


def read_marker(model_dir: Path, model_id: str, revision: str, variant: str | None) -> Marker | None:
    """The marker of a completed fetch of ``model_id@revision`` (and variant), or None.

    None when there is no marker, it cannot be parsed, it was written for other
    inputs, or any file it lists is missing from the snapshot. No network access.
    """
    path = marker_path(Path(model_dir), model_id, revision, variant)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        marker = Marker.from_json(data, Path(model_dir))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if marker.format != MARKER_FORMAT:
        return None
    if (marker.model_id, marker.revision, marker.variant) != (model_id, revision, variant or None):
        return None
    if not re.fullmatch(r"[0-9a-f]{40}", marker.resolved_commit):
        return None
    if marker.missing_files():
        return None
    return marker


def write_marker(marker: Marker) -> Path:
    """Write the marker atomically (temporary file in the same folder, fsync, rename)."""
    path = marker_path(marker.model_dir, marker.model_id, marker.revision, marker.variant)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + path.name, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(marker.to_json(), f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename durable too; best effort (not every filesystem allows opening a directory)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def file_sha256(path: Path, chunk: int = 8 * 1024 * 1024) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def corrupted_files(marker: Marker) -> list[tuple[str, str, str]]:
    """``(path, expected sha256, found sha256)`` for every file whose recorded sha256 no longer matches its bytes."""
    bad = []
    for f in marker.files:
        if f.sha256 is None:
            continue
        found = file_sha256(marker.snapshot_path / f.path)
        if found != f.sha256:
            bad.append((f.path, f.sha256, found))
    return bad
