"""The completion marker (the runner's API) and the configuration, without network."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kubediffusers.runner.fetch import Marker, read_marker
from kubediffusers.runner.fetch.cli import main
from kubediffusers.runner.fetch.config import FetchSettings, load
from kubediffusers.runner.fetch.errors import EXIT_INVALID_CONFIG, ConfigError
from kubediffusers.runner.fetch.marker import MarkerFile, marker_path, now_iso, repo_folder, write_marker

SHA = "0123456789abcdef0123456789abcdef01234567"


def make_snapshot(model_dir: Path, model_id: str = "org/name", files: dict[str, bytes] | None = None) -> Marker:
    files = files if files is not None else {"model_index.json": b"{}", "unet/w.safetensors": b"x" * 10}
    snap = repo_folder(model_dir, model_id) / "snapshots" / SHA
    for path, data in files.items():
        (snap / path).parent.mkdir(parents=True, exist_ok=True)
        (snap / path).write_bytes(data)
    return Marker(
        model_id=model_id,
        revision="main",
        variant="fp16",
        resolved_commit=SHA,
        files=tuple(MarkerFile(p, len(d)) for p, d in files.items()),
        completed_at=now_iso(),
        model_dir=model_dir,
    )


def test_marker_round_trip_and_snapshot_path(tmp_path):
    written = make_snapshot(tmp_path)
    path = write_marker(written)
    assert path == tmp_path / "models--org--name" / "kubediffusers-complete-main-fp16.json"
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".tmp")] == []  # atomic: no leftovers
    data = json.loads(path.read_text())
    assert data["resolved_commit"] == SHA and data["model_id"] == "org/name" and data["variant"] == "fp16"
    assert {f["path"] for f in data["files"]} == {"model_index.json", "unet/w.safetensors"}
    marker = read_marker(tmp_path, "org/name", "main", "fp16")
    assert marker == written
    assert marker.resolved_commit == SHA
    assert marker.snapshot_path == tmp_path / "models--org--name" / "snapshots" / SHA
    assert (marker.snapshot_path / "model_index.json").is_file()


def test_read_marker_rejects_other_inputs_missing_or_changed_files_and_garbage(tmp_path):
    write_marker(make_snapshot(tmp_path))
    assert read_marker(tmp_path, "org/name", "main", None) is None  # other variant
    assert read_marker(tmp_path, "org/name", "v2", "fp16") is None  # other revision
    assert read_marker(tmp_path, "org/other", "main", "fp16") is None
    assert read_marker(tmp_path / "nowhere", "org/name", "main", "fp16") is None
    weights = repo_folder(tmp_path, "org/name") / "snapshots" / SHA / "unet" / "w.safetensors"
    weights.write_bytes(b"short")
    assert read_marker(tmp_path, "org/name", "main", "fp16") is None  # size changed
    weights.unlink()
    assert read_marker(tmp_path, "org/name", "main", "fp16") is None  # file gone
    marker_path(tmp_path, "org/name", "main", "fp16").write_text("{not json")
    assert read_marker(tmp_path, "org/name", "main", "fp16") is None


def test_marker_names_are_safe_and_distinct():
    a = marker_path(Path("/m"), "o/n", "refs/pr/1", None)
    b = marker_path(Path("/m"), "o/n", "refs_pr_1", None)
    assert a != b and "/" not in a.name and a.parent == b.parent
    assert marker_path(Path("/m"), "o/n", "..", None).name.startswith("kubediffusers-complete-")
    assert ".." not in marker_path(Path("/m"), "o/n", "..", None).name.removeprefix("kubediffusers-complete-")


def test_settings_from_env_with_cli_on_top(monkeypatch, tmp_path):
    monkeypatch.setenv("KUBEDIFFUSERS_MODEL_ID", "org/from-env")
    monkeypatch.setenv("KUBEDIFFUSERS_MODEL_VARIANT", "")
    monkeypatch.setenv("KUBEDIFFUSERS_TASK", "inpainting")
    monkeypatch.setenv("KUBEDIFFUSERS_FETCH_ALLOW_PATTERNS", "unet/*, model_index.json")
    monkeypatch.setenv("KUBEDIFFUSERS_FETCH_IGNORE_PATTERNS", '["*.bin"]')
    settings, _ = load(["--revision", "v1.0", "--model-dir", str(tmp_path)])
    assert settings.model_id == "org/from-env" and settings.model_revision == "v1.0"
    assert settings.model_variant is None and settings.model_dir == tmp_path and settings.task == "inpainting"
    assert settings.fetch_allow_patterns == ["unet/*", "model_index.json"]
    assert settings.fetch_ignore_patterns == ["*.bin"]
    settings, _ = load(["--model-id", "org/from-cli", "--allow-pattern", "a/*", "--allow-pattern", "b/*"])
    assert settings.model_id == "org/from-cli" and settings.fetch_allow_patterns == ["a/*", "b/*"]
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.local:8080/")
    assert FetchSettings(model_id="a/b").endpoint == "http://mirror.local:8080"


@pytest.mark.parametrize(
    "argv, env, needle",
    [
        ([], {}, "KUBEDIFFUSERS_MODEL_ID: Field required"),
        (["--model-id", "not a repo!"], {}, "KUBEDIFFUSERS_MODEL_ID"),
        (["--model-id", "a/b"], {"KUBEDIFFUSERS_TASK": "paint-by-numbers"}, "KUBEDIFFUSERS_TASK"),
        (["--model-id", "a/b", "--variant", "fp16/../x"], {}, "KUBEDIFFUSERS_MODEL_VARIANT"),
        (["--model-id", "a/b", "--retries", "many"], {}, "--retries"),
        (["--model-id", "a/b", "--no-such-flag"], {}, "unrecognized arguments"),
        (["--model-id", "a/b"], {"KUBEDIFFUSERS_FETCH_PROGRESS_INTERVAL_SECONDS": "-1"}, "PROGRESS_INTERVAL"),
    ],
)
def test_invalid_configuration_is_one_line_exit_2_and_termination_message(argv, env, needle, monkeypatch, tmp_path, capsys):
    for key in [k for k in os.environ if k.startswith("KUBEDIFFUSERS_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    term = tmp_path / "termination-log"
    monkeypatch.setenv("KUBEDIFFUSERS_FETCH_TERMINATION_LOG", str(term))
    assert main(argv) == EXIT_INVALID_CONFIG
    out = capsys.readouterr()
    assert out.out == ""
    lines = out.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("InvalidConfiguration: ") and needle in lines[0]
    assert term.read_text() == lines[0]


def test_config_error_is_a_fetch_error():
    err = ConfigError("x")
    assert err.exit_code == 2 and err.line() == "InvalidConfiguration: x"
