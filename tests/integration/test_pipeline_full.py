"""Every role in one process on a complete random checkpoint: a rule is scored on live
RTSP footage and a question is answered from memory through the API (the model is random,
so this checks the plumbing and the contracts, not the answers)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlmodel import Session, select

from flashwatch.db.models import Alert
from flashwatch.pipeline import Pipeline
from tests.apiharness import make_api, settings_for
from tests.checkpoints import write_full_random_checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_all_roles_score_rules_and_answer_queries(
    tmp_path: Path,
    rtsp_server,
    h264_clip: Path,  # type: ignore[no-untyped-def]
) -> None:
    ckpt = write_full_random_checkpoint(tmp_path / "model")
    server = rtsp_server({"/cam1": h264_clip})
    api = make_api(
        settings_for(tmp_path, None, encoder={"model_dir": ckpt}, ingest={"pyramid_levels": 2})
    )
    pipeline = Pipeline(api.state, ("ingest", "encoder", "reasoner", "alerts", "api"))
    pipeline.start()
    try:
        assert pipeline.skipped == {}, pipeline.skipped
        cam = api.camera(url=server.url("/cam1"))
        # threshold 0 with k=n=1: every evaluated window fires, whatever the random model says
        rule = api.rule(
            "anything",
            [cam["id"]],
            window_s=8,
            step_s=4,
            threshold=0.0,
            hysteresis_k=1,
            hysteresis_n=1,
            cooldown_s=0,
        )
        deadline = time.monotonic() + 240
        alerts: list[Alert] = []
        while time.monotonic() < deadline and not alerts:
            with Session(api.state.engine) as s:
                alerts = list(s.exec(select(Alert).where(Alert.rule_id == rule["id"])).all())
            time.sleep(0.5)
        assert alerts, pipeline.alert_scheduler.metrics  # type: ignore[union-attr]
        a = alerts[0]
        assert a.camera_id == cam["id"] and 0.0 <= a.score <= 1.0
        assert (a.window_end - a.window_start).total_seconds() == pytest.approx(8, abs=0.01)

        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 120))
        resp = api.client.post(
            "/v1/queries",
            json={"question": "What happens?", "camera_ids": [cam["id"]], "since": since},
            headers=api.h("viewer"),
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert isinstance(body["answer"], str) and body["frames"] > 0 and body["frames"] % 4 == 0
    finally:
        pipeline.stop()
