"""The chart's crds/ is a byte-identical copy of crds/ (hack/sync_chart_crds.py)."""

from __future__ import annotations

import subprocess
import sys

from .helpers import CHART, ROOT


def test_chart_crds_are_identical_to_the_top_level_crds() -> None:
    sources = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    assert sources, "crds/ is empty"
    assert sorted(p.name for p in (CHART / "crds").glob("*.yaml")) == sources
    for name in sources:
        assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), (
            f"charts/kubediffusers/crds/{name} differs from crds/{name}: run .venv/bin/python hack/sync_chart_crds.py"
        )


def test_the_sync_script_check_mode_agrees() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "hack" / "sync_chart_crds.py"), "--check"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_sync_script_reports_a_stale_copy(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import importlib.util

    spec = importlib.util.spec_from_file_location("sync_chart_crds", ROOT / "hack" / "sync_chart_crds.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    source, copy = tmp_path / "crds", tmp_path / "chart-crds"
    source.mkdir()
    (source / "a.yaml").write_text("kind: A\n")
    monkeypatch.setattr(module, "SOURCE", source)
    monkeypatch.setattr(module, "CHART_CRDS", copy)
    assert module.differences() == ["charts/kubediffusers/crds/a.yaml is missing"]
    module.sync()
    assert module.differences() == []
    (copy / "a.yaml").write_text("kind: B\n")
    (copy / "old.yaml").write_text("kind: Old\n")
    assert sorted(module.differences()) == ["charts/kubediffusers/crds/a.yaml differs from crds/a.yaml", "charts/kubediffusers/crds/old.yaml is not in crds/"]
    module.sync()
    assert module.differences() == [] and not (copy / "old.yaml").exists()
