"""`flashwatch synth` sub-app: video + truth files, truth listing, bad input exits 2."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from ingest.synth import read_truth
from ingest.synth.cli import synth_app

runner = CliRunner()


def test_video_then_truth(tmp_path: Path) -> None:
    out = tmp_path / "cam.mp4"
    args = ["video", str(out), "--seed", "3", "--seconds", "4", "--fps", "5", "--size", "96x64"]
    res = runner.invoke(synth_app, [*args, "--events", "red_car_parks@1,blue_person_crosses@0"])
    assert res.exit_code == 0, res.output
    assert out.stat().st_size > 0 and (tmp_path / "cam.mp4.truth.json").exists()
    truth = read_truth(out)
    assert truth.seed == 3 and truth.duration == 4.0
    assert truth.first("park", colour="red") is not None

    res = runner.invoke(synth_app, ["truth", str(out), "--needles"])
    assert res.exit_code == 0 and "park" in res.output and "red car" in res.output
    res = runner.invoke(synth_app, ["truth", str(out), "--json", "--at", "0.5"])
    assert res.exit_code == 0
    assert {e["kind"] for e in json.loads(res.output)} <= {"cross", "enter"}


def test_frame(tmp_path: Path) -> None:
    res = runner.invoke(
        synth_app, ["frame", str(tmp_path / "f.png"), "--t", "2", "-e", "red_car_parks@0"]
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "f.png").stat().st_size > 1000


def test_bad_input_is_a_usage_error(tmp_path: Path) -> None:
    res = runner.invoke(synth_app, ["video", str(tmp_path / "x.mp4"), "-e", "red_car_flies@3"])
    assert res.exit_code == 2 and not (tmp_path / "x.mp4").exists()
    res = runner.invoke(synth_app, ["video", str(tmp_path / "x.mp4"), "--size", "33x20"])
    assert res.exit_code == 2
    res = runner.invoke(synth_app, ["truth", str(tmp_path / "missing.mp4")])
    assert res.exit_code == 2
