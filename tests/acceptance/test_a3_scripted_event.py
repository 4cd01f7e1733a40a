"""A3: a scripted event in a synthetic RTSP camera fires the standing rule; a control camera
does not. Every role runs in one process with the bundled tiny model (`models/tiny`), loaded
by the normal loaders; cameras come from a real RTSP server.

Pass: the first alert on the event camera arrives within window + step (+ ingest/encode
latency) after the car has parked, its evidence lies in the parked interval, and the control
camera (same scene style, a blue car parks instead) gets no alert.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlmodel import Session, select

from flashwatch.db.models import Alert
from flashwatch.pipeline import Pipeline
from flashwatch.runtime import BUNDLED_MODEL
from ingest.synth.scene import Scene, SceneSpec
from ingest.synth.video import write_camera_file
from tests.apiharness import make_api, settings_for

pytestmark = [
    pytest.mark.acceptance,
    pytest.mark.slow,
]

PARK_AT, DWELL, SECONDS = 20.0, 60.0, 110.0
WINDOW_S, STEP_S = 16.0, 4.0
LATENCY_S = 12.0  # RTSP start, 4-frame clips, encoder batch, one alert pass


def _camera(path: Path, seed: int, event: str) -> tuple[Path, tuple[float, float]]:
    spec = SceneSpec(
        seed=seed,
        duration=SECONDS,
        events=(event,),
        width=320,
        height=240,
        fps=10.0,
        people_per_min=1.0,
        cars_per_min=0.0,
    )
    scene = Scene.from_spec(spec)
    parked = [e for e in scene.truth.events if e.kind == "park"]
    assert len(parked) == 1
    return write_camera_file(path, scene, SECONDS), (parked[0].t_start, parked[0].t_end)


def test_red_car_parks_fires_rule_and_control_stays_quiet(tmp_path: Path, rtsp_server) -> None:  # type: ignore[no-untyped-def]
    gate, (park_start, park_end) = _camera(
        tmp_path / "gate.mp4", 31, f"red_car_parks@{PARK_AT:g}+{DWELL:g}"
    )
    control, _ = _camera(tmp_path / "yard.mp4", 32, f"blue_car_parks@{PARK_AT:g}+{DWELL:g}")
    server = rtsp_server({"/gate": gate, "/yard": control})
    api = make_api(
        settings_for(
            tmp_path,
            None,
            encoder={"model_dir": BUNDLED_MODEL},
            reasoner={"model_dir": BUNDLED_MODEL},
            ingest={"pyramid_levels": 2},
        )
    )
    pipeline = Pipeline(api.state, ("ingest", "encoder", "reasoner", "alerts", "api"))
    pipeline.start()
    try:
        assert pipeline.skipped == {}, pipeline.skipped
        cam = api.camera(name="gate", url=server.url("/gate"))
        ctl = api.camera(name="yard", url=server.url("/yard"))
        started = time.time()  # the stream's first frame arrives within a second or two
        rule = api.rule(
            "red-car",
            [cam["id"], ctl["id"]],
            text="a red car is parked",
            window_s=WINDOW_S,
            step_s=STEP_S,
            cooldown_s=600,
        )
        deadline = time.monotonic() + SECONDS + 20
        first: Alert | None = None
        while time.monotonic() < deadline:
            with Session(api.state.engine) as s:
                rows = list(s.exec(select(Alert).where(Alert.rule_id == rule["id"])).all())
            if any(a.camera_id == cam["id"] for a in rows) and first is None:
                first = min((a for a in rows if a.camera_id == cam["id"]), key=lambda a: a.id)
                fired_after = time.time() - started
            if first is not None and time.time() - started > park_start + 40:
                break
            time.sleep(1.0)
        with Session(api.state.engine) as s:
            rows = list(s.exec(select(Alert).where(Alert.rule_id == rule["id"])).all())
        assert first is not None, f"no alert on the event camera; metrics {pipeline.metrics}"
        assert not [a for a in rows if a.camera_id == ctl["id"]], "control camera alerted"
        assert fired_after <= park_start + WINDOW_S + STEP_S + LATENCY_S, fired_after
        assert fired_after >= park_start, f"fired {fired_after:.1f} s in, before the car parked"
        evidence = [t - started for t in first.evidence]
        slack = 6.0  # the stream's own start offset
        assert any(park_start - slack <= t <= park_end + slack for t in evidence), evidence
    finally:
        pipeline.stop()
