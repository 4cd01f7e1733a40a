"""Embedded pipeline end to end: a camera registered through the API is read from a real
RTSP server, its clips are encoded by a (tiny, random-weight) UMT loaded from a checkpoint
directory in the official layout, and land in the embedded memory; deleting the camera
through the API removes its memory (S8)."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

from encoder_trt.testing import tiny_config, write_fake_checkpoint
from flashwatch.pipeline import Pipeline
from tests.apiharness import make_api, settings_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_rtsp_to_memory_and_delete(tmp_path: Path, rtsp_server, h264_clip: Path) -> None:  # type: ignore[no-untyped-def]
    ckpt = tmp_path / "model"
    write_fake_checkpoint(ckpt, tiny_config(image_size=224, pos_base_grid=14, depth=1))
    server = rtsp_server({"/cam1": h264_clip})
    api = make_api(
        settings_for(
            tmp_path,
            None,
            encoder={"model_dir": ckpt},
            ingest={"level0_interval_s": 1.0, "pyramid_levels": 2},
        )
    )
    pipeline = Pipeline(api.state, ("ingest", "encoder"))
    pipeline.start()
    try:
        assert pipeline.started == ["memory", "encoder", "ingest"]
        cam = api.camera(url=server.url("/cam1"))
        store = pipeline.store
        deadline = time.monotonic() + 60
        clips = []
        while time.monotonic() < deadline:
            clips = store.latest(cam["id"], 0, 10, thumbs=True)
            if len(clips) >= 3:
                break
            time.sleep(0.5)
        assert len(clips) >= 3, f"only {len(clips)} clips; status {pipeline.supervisor.status()}"
        starts = sorted(c.t[0] for c in clips)
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert all(3.0 <= g <= 5.0 for g in gaps), gaps  # 4 frames at 1 s per clip
        assert abs(starts[-1] - time.time()) < 60
        assert all(c.shape == (64, 64) and c.thumb for c in clips)

        metrics = api.client.get("/metrics", headers=api.h("viewer")).text
        assert f'fw_ingest_level_clips_total{{camera="{cam["id"]}",level="0"}}' in metrics
        assert "fw_encoder_clips_total" in metrics
        status = api.client.get(f"/v1/cameras/{cam['id']}/status", headers=api.h("viewer")).json()
        assert status["state"] == "online" and status["last_frame_at"] is not None

        assert (
            api.client.delete(f"/v1/cameras/{cam['id']}", headers=api.h("admin")).status_code == 204
        )
        assert store.coverage(cam["id"]) == {}
    finally:
        pipeline.stop()


def test_imported_file_gets_timestamps_from_its_start_time(tmp_path: Path, h264_clip: Path) -> None:
    ckpt = tmp_path / "model"
    write_fake_checkpoint(ckpt, tiny_config(depth=1))
    api = make_api(
        settings_for(
            tmp_path,
            None,
            encoder={"model_dir": ckpt},
            ingest={"allow_file_sources": True, "pyramid_levels": 2},
        )
    )
    url = f"file://{h264_clip}"
    missing = api.client.post("/v1/cameras", json={"name": "f", "url": url}, headers=api.h("admin"))
    assert missing.status_code == 422 and "source_start_at" in missing.json()["message"]
    live = api.client.post(
        "/v1/cameras",
        json={"name": "l", "url": "rtsp://127.0.0.1/x", "source_start_at": "2026-01-01T00:00:00Z"},
        headers=api.h("admin"),
    )
    assert live.status_code == 422
    pipeline = Pipeline(api.state, ("ingest", "encoder"))
    pipeline.start()
    try:
        cam = api.camera(name="import", url=url, source_start_at="2026-01-01T08:00:00Z")
        assert cam["source_start_at"] == "2026-01-01T08:00:00Z"
        start = 1767254400.0  # 2026-01-01T08:00:00Z
        deadline = time.monotonic() + 60
        clips = []
        while time.monotonic() < deadline and len(clips) < 7:  # a 30 s file: 7 level-0 clips
            clips = pipeline.store.range(cam["id"], 0, start - 1, start + 60)
            time.sleep(0.5)
        assert len(clips) == 7, [c.t for c in clips]
        assert start <= clips[0].t[0] < start + 4 and clips[-1].t[3] < start + 30
        assert pipeline.store.range(cam["id"], 1, start - 1, start + 60)  # level 1 too
    finally:
        pipeline.stop()
