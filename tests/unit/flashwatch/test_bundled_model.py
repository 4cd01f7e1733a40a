"""`serve` without a model directory uses the bundled tiny model, and says so; nothing else
does (a distributed role must not quietly run a toy model)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from flashwatch.config import load_settings
from flashwatch.demo import DemoOptions, demo_settings
from flashwatch.runtime import BUNDLED_MODEL, with_bundled_model


def _fake_model(tmp_path: Path) -> Path:
    d = tmp_path / "tiny"
    d.mkdir()
    (d / "config.json").write_text("{}")
    return d


def test_unconfigured_settings_get_the_bundled_model(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    bundled = _fake_model(tmp_path)
    with caplog.at_level(logging.WARNING, logger="flashwatch"):
        s = with_bundled_model(load_settings(data_dir=tmp_path), bundled)
    assert s.encoder.model_dir == bundled and s.reasoner.model_dir == bundled
    assert "bundled tiny model" in caplog.text


@pytest.mark.parametrize(
    "overrides",
    [
        {"encoder": {"model_dir": "/models/vcf-7b"}},
        {"reasoner": {"model_dir": "/models/vcf-7b"}},
        {"reasoner": {"url": "http://reasoner:8080"}},
    ],
)
def test_configured_model_or_remote_reasoner_is_kept(tmp_path: Path, overrides: dict) -> None:  # type: ignore[type-arg]
    s = load_settings(data_dir=tmp_path, **overrides)
    assert with_bundled_model(s, _fake_model(tmp_path)) == s


def test_missing_bundle_changes_nothing(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path)
    assert with_bundled_model(s, tmp_path / "absent") == s


def test_demo_settings_replay_files_in_real_time(tmp_path: Path) -> None:
    if not (BUNDLED_MODEL / "config.json").is_file():
        with pytest.raises(RuntimeError, match="bundled tiny model is missing"):
            demo_settings(DemoOptions(data_dir=tmp_path))
        return
    s = demo_settings(DemoOptions(data_dir=tmp_path, port=18080))
    assert s.ingest.allow_file_sources and s.ingest.file_realtime
    assert s.api.port == 18080 and s.api.host == "127.0.0.1"
    assert s.encoder.model_dir == BUNDLED_MODEL


def test_demo_clears_only_its_own_directory(tmp_path: Path) -> None:
    from flashwatch.demo import MARKER, prepare_data_dir

    other = tmp_path / "precious"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(RuntimeError, match="not a demo directory"):
        prepare_data_dir(other)
    assert (other / "keep.txt").is_file()
    demo = tmp_path / "demo"
    prepare_data_dir(demo)
    (demo / "old.db").write_text("x")
    prepare_data_dir(demo)
    assert sorted(p.name for p in demo.iterdir()) == [MARKER]
