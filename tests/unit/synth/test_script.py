"""Scripting: event-spec parsing, determinism, the shape of each behaviour's events."""

from __future__ import annotations

import numpy as np
import pytest

from ingest.synth import COLOURS, EVENT_KINDS, REGIONS, EventSpec, make_truth, random_specs


def test_parse_specs() -> None:
    s = EventSpec.parse("red_car_parks@120")
    assert (s.verb, s.actor_kind, s.colour, s.t, s.dwell) == ("park", "car", "red", 120.0, None)
    s = EventSpec.parse("white_person_loiters@3.5+40")
    assert (s.verb, s.t, s.dwell) == ("loiter", 3.5, 40.0)
    s = EventSpec.parse("black_person_drops_yellow_bag@60")
    assert (s.verb, s.colour, s.bag_colour) == ("drop", "black", "yellow")
    assert EventSpec.parse("blue_car_stops@1").verb == "stop"


@pytest.mark.parametrize(
    "bad", ["red_car_parks", "purple_car_parks@3", "red_person_parks@3", "red_car_loiters@1", ""]
)
def test_bad_specs_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        EventSpec.parse(bad)


def test_same_seed_same_truth_and_seeds_differ() -> None:
    a = make_truth(5, 1800.0, ["red_car_parks@60"], random_needles=3)
    assert a == make_truth(5, 1800.0, ["red_car_parks@60"], random_needles=3)
    assert a.to_json() != make_truth(6, 1800.0, ["red_car_parks@60"], random_needles=3).to_json()


def test_background_is_innocuous_crossings_at_the_requested_rate() -> None:
    gt = make_truth(1, 3600.0, people_per_min=3.0, cars_per_min=1.0)
    assert {e.kind for e in gt.events} == {"cross"} and not any(e.needle for e in gt.events)
    people = sum(t.actor_kind == "person" for t in gt.tracks)
    cars = sum(t.actor_kind == "car" for t in gt.tracks)
    assert 140 < people < 220 and 40 < cars < 85
    assert make_truth(1, 600.0, people_per_min=0, cars_per_min=0).tracks == []


def test_parked_car_enters_parks_then_leaves_contiguously() -> None:
    gt = make_truth(2, 300.0, ["red_car_parks@20+60"], people_per_min=0, cars_per_min=0)
    kinds = [(e.kind, e.region) for e in gt.events]
    assert kinds == [("enter", "road"), ("park", "bay0"), ("leave", "road")]
    enter, park, leave = gt.events
    assert enter.t_start == 20.0 and enter.t_end == park.t_start
    assert park.t_end - park.t_start == pytest.approx(60.0) and leave.t_start == park.t_end
    x, y = gt.tracks[0].position((park.t_start + park.t_end) / 2)
    x0, y0, x1, y1 = REGIONS["bay0"]
    assert x0 < x < x1 and y0 < y <= y1
    assert gt.count("car", leave.t_end + 1) == 0


def test_parking_without_dwell_stays_to_the_end_and_bays_rotate() -> None:
    gt = make_truth(2, 300.0, ["red_car_parks@20", "blue_car_parks@40"], 0, 0)
    parks = gt.active(0, 300, kind="park")
    assert [p.region for p in parks] == ["bay0", "bay1"]
    assert all(p.t_end == 300.0 for p in parks) and gt.count("car", 299.0) == 2


def test_drop_leaves_a_bag_until_the_end() -> None:
    gt = make_truth(4, 200.0, ["green_person_drops_yellow_bag@10"], 0, 0)
    drop = gt.first("drop")
    assert drop is not None and (drop.actor_kind, drop.colour) == ("bag", "yellow")
    assert gt.count("bag", drop.t_end, "yellow") == 1 and gt.count("bag", 199.0) == 1
    assert gt.count("bag", drop.t_start - 0.1) == 0
    assert gt.count("person", 199.0) == 0


def test_stop_and_loiter_have_enter_dwell_leave() -> None:
    gt = make_truth(4, 200.0, ["blue_car_stops@5+12", "white_person_loiters@10+30"], 0, 0)
    stop, loiter = gt.first("stop"), gt.first("loiter")
    assert stop is not None and stop.t_end - stop.t_start == pytest.approx(12.0)
    assert loiter is not None and loiter.t_end - loiter.t_start == pytest.approx(30.0)
    assert len(gt.active(0, 200, kind="leave")) == 2


def test_random_needles_are_valid_and_inside_the_footage() -> None:
    rng = np.random.default_rng(0)
    specs = random_specs(rng, 3600.0, 50)
    assert len(specs) == 50 and all(0 <= s.t <= 3600 - 60 for s in specs)
    gt = make_truth(9, 3600.0, specs)
    for e in gt.events:
        assert e.kind in EVENT_KINDS and e.colour in COLOURS and e.t_end > e.t_start
        assert e.region in REGIONS


def test_hold_still_stands_actors_where_they_were_and_rewrites_their_events() -> None:
    """A passing person held still loiters, a car held on the road stops, one held in its bay
    parks; each stands at the place of the chosen time over [t0, t1) only; a bag in `holds`
    and everyone else keep their tracks and events."""
    from ingest.synth import hold_still

    gt = make_truth(
        3,
        200.0,
        ["green_person_crosses@10", "blue_car_crosses@12", "red_car_parks@5+100",
         "black_person_drops_yellow_bag@40"],
        people_per_min=0.0,
        cars_per_min=0.0,
    )  # fmt: skip
    by = {(tr.actor_kind, tr.colour): tr for tr in gt.tracks}
    person, car, parked = by["person", "green"], by["car", "blue"], by["car", "red"]
    bag, dropper = by["bag", "yellow"], by["person", "black"]
    park = next(e for e in gt.events if e.kind == "park")
    t_car = next(t for t in np.arange(12, 30, 0.5) if 0.3 < car.position(t)[0] < 0.7)
    holds = {person.actor_id: 15.0, car.actor_id: float(t_car), parked.actor_id: park.t_start + 5,
             bag.actor_id: 60.0}  # fmt: skip
    held = hold_still(gt, holds, 14.0, 30.0)

    for tr, event, region in ((person, "loiter", "walkway"), (car, "stop", "road"),
                              (parked, "park", "bay0")):  # fmt: skip
        new = next(t for t in held.tracks if t.actor_id == tr.actor_id)
        x, y = tr.position(holds[tr.actor_id])
        assert [new.position(t) for t in (14.0, 20.0, 29.9)] == [(x, y)] * 3
        assert new.visible(14.0) and not new.visible(13.9) and not new.visible(30.0)
        evs = [e for e in held.events if e.actor_id == tr.actor_id]
        assert [(e.kind, e.region, e.t_start, e.t_end, e.colour) for e in evs] == [
            (event, region, 14.0, 30.0, tr.colour)
        ]
    untouched = {bag.actor_id, dropper.actor_id}
    assert [t for t in held.tracks if t.actor_id in untouched] == [dropper, bag]
    assert [e for e in held.events if e.actor_id in untouched] == [
        e for e in gt.events if e.actor_id in untouched
    ]
    assert held.seed == gt.seed and held.duration == gt.duration and held.regions == gt.regions
    with pytest.raises(ValueError, match="t1 > t0"):
        hold_still(gt, holds, 30.0, 30.0)

    # With an rng, the held person shuffles about its spot like a scripted loiterer; cars don't.
    wandering = hold_still(gt, holds, 14.0, 44.0, np.random.default_rng(0))
    new = next(t for t in wandering.tracks if t.actor_id == person.actor_id)
    x, y = person.position(15.0)
    xs = [new.position(t)[0] for t in np.arange(14.0, 44.0, 0.5)]
    assert len(new.keys) > 5 and max(xs) - min(xs) > 0.01
    assert all(abs(v - x) <= 0.04 + 1e-9 for v in xs) and new.keys[-1] == (44.0, x, y)
    stopped = next(t for t in wandering.tracks if t.actor_id == car.actor_id)
    assert len(stopped.keys) == 2
