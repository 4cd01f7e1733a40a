"""Ground-truth data and queries: intervals, counts, presence, JSON round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest.synth import Event, GroundTruth, Track, make_truth


def small_truth() -> GroundTruth:
    tracks = [
        Track(0, "car", "red", ((10.0, 0.0, 0.6), (14.0, 0.2, 0.6), (100.0, 0.2, 0.6))),
        Track(1, "person", "blue", ((0.0, 0.0, 0.85), (20.0, 1.0, 0.85))),
        Track(2, "person", "blue", ((5.0, 1.0, 0.85), (25.0, 0.0, 0.85))),
    ]
    events = [
        Event("enter", "car", "red", 10.0, 14.0, "road", 0, True),
        Event("park", "car", "red", 14.0, 100.0, "bay0", 0, True),
        Event("cross", "person", "blue", 0.0, 20.0, "walkway", 1),
        Event("cross", "person", "blue", 5.0, 25.0, "walkway", 2),
    ]
    return GroundTruth(7, 100.0, tracks, events, {"bay0": (0.1, 0.33, 0.3, 0.5)})


def test_intervals_are_half_open() -> None:
    e = Event("park", "car", "red", 14.0, 100.0, "bay0")
    assert e.overlaps(14.0, 14.0) and e.overlaps(99.9, 99.9) and not e.overlaps(100.0, 100.0)
    assert e.overlaps(0.0, 14.5) and not e.overlaps(0.0, 14.0) and not e.overlaps(100.0, 120.0)


def test_track_position_interpolates_and_clamps() -> None:
    tr = small_truth().tracks[0]
    assert tr.position(12.0) == pytest.approx((0.1, 0.6))
    assert tr.position(50.0) == pytest.approx((0.2, 0.6))
    assert tr.position(0.0) == pytest.approx((0.0, 0.6))
    assert tr.moving(12.0) and not tr.moving(50.0)
    assert tr.visible(10.0) and not tr.visible(100.0)


def test_queries() -> None:
    gt = small_truth()
    assert [e.kind for e in gt.active(13.0, 15.0)] == ["cross", "cross", "enter", "park"]
    assert [e.kind for e in gt.active(0, 200, needle=True)] == ["enter", "park"]
    assert gt.active(30.0, 40.0, kind="park", colour="red")[0].region == "bay0"
    assert gt.count("person", 10.0) == 2
    assert gt.count("person", 10.0, "blue") == 2 and gt.count("person", 22.0) == 1
    assert gt.count("car", 9.9) == 0 and gt.count("car", 10.0, "red") == 1
    assert gt.present("car", "red", 0.0, 10.0) and not gt.present("car", "red", 0.0, 9.0)
    assert not gt.present("car", "blue", 0.0, 100.0) and gt.present("person", None, 24, 30)
    assert gt.happened("park", 50.0, 60.0, "car", "red")
    assert not gt.happened("park", 0.0, 14.0)
    first = gt.first("park", colour="red")
    assert first is not None and first.t_start == 14.0
    assert gt.first("drop") is None


def test_json_round_trip_is_exact() -> None:
    gt = make_truth(3, 600.0, ["red_car_parks@100+30", "black_person_drops_yellow_bag@200"])
    text = gt.to_json()
    back = GroundTruth.from_json(text)
    assert back == gt
    assert back.to_json() == text
    data = json.loads(text)
    assert data["format"] == "flashwatch-synth-truth/1"
    assert {"tracks", "events", "regions", "seed", "duration"} <= data.keys()


def test_save_and_load(tmp_path: Path) -> None:
    gt = small_truth()
    p = gt.save(tmp_path / "x.truth.json")
    assert GroundTruth.load(p) == gt
