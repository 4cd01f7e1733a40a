"""Windows and questions: deterministic, and answers that agree with the ground truth."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ingest.synth import COLOURS, Event, Scene, SceneSpec
from reasoner.answers import mentioned_times
from reasoner.tiny.data import (
    EVENTS,
    QUESTION_KINDS,
    Window,
    colour_qa,
    count_qa,
    happened_qa,
    presence_qa,
    questions_for,
    render_window,
    sample_windows,
    seen_events,
    seen_tracks,
    when_qa,
)


def test_windows_are_deterministic_and_shaped() -> None:
    a, b = sample_windows(5, 3, 64), sample_windows(5, 3, 64)
    for wa, wb in zip(a, b, strict=True):
        assert (wa.t0, wa.step) == (wb.t0, wb.step)
        assert np.array_equal(wa.frames, wb.frames)
        n = len(wa.frames)
        assert n % 4 == 0 and wa.frames.shape[1:] == (64, 64, 3) and wa.frames.dtype == np.uint8
        assert 8 <= wa.duration <= 64 * 2
    qa1 = questions_for(a[0], np.random.default_rng(1), 16)
    qa2 = questions_for(b[0], np.random.default_rng(1), 16)
    assert qa1 == qa2
    assert {q.kind for w in a for q in questions_for(w, np.random.default_rng(2), 30)} <= set(
        QUESTION_KINDS
    )


def scripted_window() -> Window:
    """A quiet scene: a red car parks at ~10 s, a person in blue drops a yellow bag at 30 s."""
    spec = SceneSpec(
        seed=3,
        duration=120.0,
        events=("red_car_parks@5", "blue_person_drops_yellow_bag@30"),
        width=160,
        height=120,
        people_per_min=0.0,
        cars_per_min=0.0,
    )
    scene = Scene.from_spec(spec)
    return Window(3, 0.0, 1.0, render_window(scene, 0.0, 1.0, 64, 64), scene.truth)


def answers(w: Window, maker, n: int = 200) -> dict[str, str]:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    out = {}
    for _ in range(n):
        qa = maker(w, rng)
        if qa is not None:
            out[qa.question] = qa.answer
    return out


def test_answers_match_ground_truth() -> None:
    w = scripted_window()
    park = w.truth.first("park", actor_kind="car", colour="red")
    assert park is not None
    assert [tr.colour for tr in seen_tracks(w.truth, w.times, "car")] == ["red"]
    assert [e.colour for e in seen_events(w.truth, w.times, "drop")] == ["yellow"]

    pres = answers(w, presence_qa)
    assert pres.get("Is there a red car in the video? Answer yes or no.", "Yes") == "Yes"
    assert pres.get("Does the video show a yellow bag? Answer yes or no.", "Yes") == "Yes"
    for q, a in pres.items():
        if "blue car" in q or "green bag" in q or "person in red" in q:
            assert a == "No", q
    hap = answers(w, happened_qa)
    assert hap.get("Did a red car park? Answer yes or no.", "Yes") == "Yes"
    assert hap.get("Did a blue car park? Answer yes or no.", "No") == "No"
    assert hap.get("Did someone drop a yellow bag? Answer yes or no.", "Yes") == "Yes"
    assert all(a == "No" for q, a in hap.items() if "stop" in q or "loiter" in q)

    col = answers(w, colour_qa)
    assert col.get("What colour is the car that parked?", "Red") == "Red"
    assert col.get("What colour is the dropped bag?", "Yellow") == "Yellow"
    counts = answers(w, count_qa)
    assert counts["How many cars appear in the video?"] == "1"
    assert counts["How many bags appear in the video?"] == "1"
    assert counts["How many people appear in the video?"] == "1"

    when = answers(w, when_qa)
    assert "When did a red car park?" in when
    (mention,) = mentioned_times(when["When did a red car park?"], w.duration)
    assert abs(mention.offset_s - park.t_start) <= 0.5
    drop = w.truth.first("drop")
    assert drop is not None
    (mention,) = mentioned_times(when["When did a yellow bag get dropped?"], w.duration)
    assert abs(mention.offset_s - drop.t_start) <= 0.5


def test_window_before_events_says_no() -> None:
    w = scripted_window()
    early = Window(w.seed, 0.0, 1.0, w.frames[:4], w.truth)  # 0-4 s: the car is still off screen
    assert not seen_tracks(early.truth, early.times, "car")
    for q, a in answers(early, happened_qa).items():
        assert a == "No", q


def test_yes_no_questions_carry_their_topic_and_colour() -> None:
    """Evaluation groups errors by what a question asks about; those fields must say what
    the question's wording says."""
    w = scripted_window()
    rng = np.random.default_rng(1)
    for maker in (happened_qa, presence_qa):
        for _ in range(300):
            qa = maker(w, rng)
            assert qa.topic, qa
            named = [c for c in COLOURS if f" {c}" in qa.question]
            assert named == ([qa.colour] if qa.colour else []), qa
            if maker is happened_qa:
                assert EVENTS[qa.topic][0] in qa.question, qa  # the event's actor kind


def test_decoy_no_answers_are_grouped_apart_from_plain_no() -> None:
    """A red car is on screen but parks, so "did a red car stop?" is a decoy; a blue car is
    not on screen at all."""
    from reasoner.tiny.data import QA
    from reasoner.tiny.evaluate import yes_no_group

    w = scripted_window()
    decoy = QA("happened", "Did a red car stop on the road? Answer yes or no.", "No", "stop", "red")
    plain = QA(
        "happened", "Did a blue car stop on the road? Answer yes or no.", "No", "stop", "blue"
    )
    yes = QA("happened", "Did a red car park? Answer yes or no.", "Yes", "park", "red")
    assert yes_no_group(decoy, w) == "happened/stop/no-decoy"
    assert yes_no_group(plain, w) == "happened/stop/no"
    assert yes_no_group(yes, w) == "happened/park/yes"


def test_event_questions_include_hard_negatives() -> None:
    """An actor on screen that does not do the event is asked about (and answered No), so
    "did a red car park?" is not learned as "is there a red car?"."""
    w = scripted_window()  # a red car parks; a person in blue drops a bag, nobody stops/loiters
    rng = np.random.default_rng(0)
    qas = [happened_qa(w, rng) for _ in range(2000)]
    decoys = ("a red car stop", "red car stopp", "a person in blue loiter")
    hard = [qa for qa in qas if any(d in qa.question for d in decoys)]
    assert {qa.answer for qa in hard} == {"No"}
    # 5% of questions by chance alone; the hard-negative share (30% of picks with a decoy on
    # screen) triples it.
    assert len(hard) / len(qas) > 0.12


def test_decoy_share_sets_how_often_an_on_screen_actor_that_does_not_do_it_is_asked() -> None:
    """Training can ask about decoys more often than evaluation (0.3): a model that called
    passing cars "stopped" learns the difference from more such questions; the default keeps
    evaluation's questions exactly as they were."""
    from reasoner.tiny.data import FOCUS_WEIGHTS, HARD_NEGATIVE, _event_pick

    w = scripted_window()  # a red car parks; a person in blue crosses and drops a yellow bag
    decoys = {("stop", "red"), ("loiter", "blue")}  # on screen, not doing it (a bag: no)

    def share(decoy: float) -> float:
        picks = [_event_pick(w, np.random.default_rng(i), decoy=decoy) for i in range(400)]
        hard = [(k, c) for k, c, yes in picks if (k, c) in decoys and not yes]
        return len(hard) / len(picks)

    assert share(0.0) < 0.06  # chance alone
    assert share(1.0) > 0.35  # every pick of stop or loiter (2 of 5 kinds), 40% expected
    assert share(0.3) < share(0.6) < share(1.0)
    assert HARD_NEGATIVE == 0.3  # what every recorded evaluation asked (BENCHMARKS)

    def stops(decoy: float) -> list[str]:  # through questions_for, as training asks
        asked = questions_for(w, np.random.default_rng(7), 400, FOCUS_WEIGHTS, decoy=decoy)
        return [
            qa.answer for qa in asked if qa.kind == "happened" and "red car stop" in qa.question
        ]

    assert set(stops(1.0)) == {"No"} and len(stops(1.0)) > 2 * len(stops(0.0))


def test_clip_labels_mark_what_a_car_is_doing_not_only_that_it_is_there() -> None:
    from ingest.synth import COLOURS
    from reasoner.tiny.data import EVENTS
    from reasoner.tiny.labels import AUX_ACTORS, AUX_LABELS, clip_labels

    scene = Scene.from_spec(
        SceneSpec(seed=5, duration=120.0, events=("red_car_parks@4+40", "red_car_crosses@70"),
                  width=160, height=120, people_per_min=0.0, cars_per_min=0.0)
    )  # fmt: skip
    park = next(e for e in scene.truth.events if e.kind == "park")
    cross = next(e for e in scene.truth.events if e.kind == "cross")
    times = [park.t_start + 2.0, cross.t_start + 3.0]  # one clip parked, one driving past
    frames = np.zeros((4, 1, 1, 3), np.uint8)
    red_car = AUX_ACTORS.index("car") * len(COLOURS) + COLOURS.index("red")
    base = len(AUX_ACTORS) * len(COLOURS)
    red_parked = base + list(EVENTS).index("park") * len(COLOURS) + COLOURS.index("red")
    red_crossing = base + list(EVENTS).index("cross") * len(COLOURS) + COLOURS.index("red")
    parked, passing = (clip_labels(Window(5, t, 1.0, frames, scene.truth))[0] for t in times)
    assert parked.shape == passing.shape == (AUX_LABELS,)
    assert parked[red_car] == passing[red_car] == 1.0
    assert parked[red_parked] == 1.0 and parked[red_crossing] == 0.0
    assert passing[red_parked] == 0.0 and passing[red_crossing] == 1.0
    assert parked.sum() == passing.sum() == 2.0  # nothing else on screen


def test_token_labels_mark_the_patch_showing_each_actor_and_what_it_does() -> None:
    """Per frame, the patch under a parked red car carries (car, red) and (park, red) and stays
    put; under a blue car driving past, (car, blue) and (cross, blue) move with it; every
    marked patch differs from the empty background (the labels point at the actor)."""
    from reasoner.tiny.data import EVENTS
    from reasoner.tiny.labels import AUX_ACTORS, AUX_LABELS, token_labels

    def spec(*events: str) -> SceneSpec:
        return SceneSpec(seed=5, duration=120.0, events=events, width=160, height=120,
                         people_per_min=0.0, cars_per_min=0.0)  # fmt: skip

    scene = Scene.from_spec(spec("red_car_parks@4+40", "blue_car_crosses@70"))
    empty = render_window(Scene.from_spec(spec()), 0.0, 1.0, 4, 64)[0].astype(int)
    park = next(e for e in scene.truth.events if e.kind == "park")
    cross = next(e for e in scene.truth.events if e.kind == "cross")
    grid, cols = 8, len(COLOURS)
    base = len(AUX_ACTORS) * cols
    car = AUX_ACTORS.index("car") * cols
    for t0, colour, event, still in (
        (park.t_start + 2.0, "red", "park", True),
        (cross.t_start + 1.5, "blue", "cross", False),
    ):
        w = Window(5, t0, 1.0, render_window(scene, t0, 1.0, 4, 64), scene.truth)
        labels = token_labels(w, grid)
        assert labels.shape == (1, 4 * grid * grid, AUX_LABELS)
        actor = car + COLOURS.index(colour)
        doing = base + list(EVENTS).index(event) * cols + COLOURS.index(colour)
        cells = []
        for i in range(4):
            frame = labels[0, i * grid * grid : (i + 1) * grid * grid]
            marked = np.flatnonzero(frame[:, actor])
            assert len(marked) == 1, f"{event} frame {i}: {marked}"
            assert frame[marked[0], doing] == 1.0
            assert frame.sum() == 2.0  # one actor, one event, nothing else on screen
            gy, gx = divmod(int(marked[0]), grid)
            cells.append((gy, gx))
            pix = w.frames[i, gy * 8 : gy * 8 + 8, gx * 8 : gx * 8 + 8].astype(int)
            bg = empty[gy * 8 : gy * 8 + 8, gx * 8 : gx * 8 + 8]
            assert (np.abs(pix - bg).sum(-1) > 60).sum() >= 8, f"{event} frame {i}"
        assert (len(set(cells)) == 1) is still, cells


def test_training_pool_cycles_camera_sizes_scene_by_scene() -> None:
    """Scene i of the pool is rendered at renders[i % len]: the model sees the 320x240 cameras
    A3 and the demo use, not only the 160x120 evaluation renders."""
    import pytest

    from reasoner.tiny.train import window_pool

    sizes = ((160, 120), (320, 240))
    pool = window_pool([5, 6], 2, 32, clips=(1, 2), renders=sizes)
    for i, seed in enumerate((5, 6)):
        want = sample_windows(seed, 2, 32, sizes[i], clips=(1, 2))
        got = pool[2 * i : 2 * i + 2]
        assert all(np.array_equal(g.frames, w.frames) for g, w in zip(got, want, strict=True))
    other = sample_windows(6, 2, 32, sizes[0], clips=(1, 2))
    assert not np.array_equal(pool[2].frames, other[0].frames)  # the size really changed
    with pytest.raises(ValueError, match="renders"):
        window_pool([5], 1, 32, renders=())


def test_explain_answers_say_yes_or_no_then_what_the_window_shows() -> None:
    """Alert reasons: asked exactly as the engine's explain call asks, answered with the
    rule's verdict first (the token its yes/no score reads) and the matching event named
    first; the plain mixes never ask them, so earlier stages' random streams are unchanged."""
    from reasoner.answers import explain_question
    from reasoner.tiny.data import (
        FOCUS_WEIGHTS,
        KIND_WEIGHTS,
        explain_qa,
        seen_summary,
        with_explain,
    )

    w = scripted_window()  # a red car parks; a person in blue crosses, drops a yellow bag
    rng = np.random.default_rng(1)
    qas = [explain_qa(w, rng) for _ in range(400)]
    parked = [q for q in qas if q.question == explain_question("a red car parked")]
    assert parked and {q.answer for q in parked} == {"Yes, a red car parked."}
    stopped = [q for q in qas if q.question.startswith("Does the video show a red car stop")]
    assert stopped and {q.answer for q in stopped} == {"No, a red car parked."}
    assert seen_summary(w, ("drop", "yellow"), limit=3) == (
        "A person dropping a yellow bag, a red car parked and a person in blue crossing."
    )
    dropped = [q for q in qas if q.question == explain_question("a person dropping a yellow bag")]
    assert dropped and {q.answer for q in dropped} == {"Yes, a person dropping a yellow bag."}
    kinds = {qa.kind for qa in questions_for(w, np.random.default_rng(2), 400, FOCUS_WEIGHTS)}
    assert "explain" not in kinds
    mix = with_explain(KIND_WEIGHTS, 0.25)
    assert abs(sum(mix) - 1.0) < 1e-9 and mix[-1] == 0.25
    assert QUESTION_KINDS[-1] == "explain"
    share = [qa.kind for qa in questions_for(w, np.random.default_rng(3), 800, mix)]
    assert 0.18 < share.count("explain") / len(share) < 0.32


def test_event_yes_asks_about_events_the_window_shows_and_zero_keeps_the_old_mix() -> None:
    """Rare events (a loiterer, a car stopping) were asked about mostly when absent: the model
    learnt to answer No to every loitering question. `event_yes` spends a share of the event
    questions on an event the window shows (answer Yes); 0 leaves the random stream as it was."""
    from reasoner.tiny.data import FOCUS_WEIGHTS, _event_pick

    w = scripted_window()  # a red car parks; a person in blue crosses and drops a yellow bag
    shown = {("park", "red"), ("drop", "yellow"), ("cross", "blue")}
    rng = np.random.default_rng(4)
    picks = [_event_pick(w, rng, yes_share=1.0) for _ in range(300)]
    assert all(yes for _, _, yes in picks)
    assert {(k, c) for k, c, _ in picks if c is not None} == shown  # every shown event, no other
    assert 0.08 < sum(c is None for _, c, _ in picks) / len(picks) < 0.25  # "Did a car park?"
    natural = [_event_pick(w, np.random.default_rng(i))[2] for i in range(300)]
    boosted = [_event_pick(w, np.random.default_rng(i), 0.3)[2] for i in range(300)]
    assert sum(boosted) > sum(natural) + 30  # 31% -> 47% here (0.3 + 0.7 * 31% expected)
    a = questions_for(w, np.random.default_rng(7), 50, FOCUS_WEIGHTS)
    b = questions_for(w, np.random.default_rng(7), 50, FOCUS_WEIGHTS, event_yes=0.0)
    assert a == b
    empty = Window(w.seed, 0.0, 1.0, w.frames[:4], w.truth)  # nothing on screen yet
    assert not any(_event_pick(empty, np.random.default_rng(i), 1.0)[2] for i in range(50))


def test_still_share_holds_actors_still_in_that_share_of_windows_and_zero_changes_nothing() -> None:
    """With still_share=1 every window shows someone held still: the truth keeps them within a
    loiterer's shuffle of one spot through the window and says what that is (loiter / stop /
    park); the frames are re-rendered from it, and around a held car they stay the same. The
    windows' times match the natural ones, and 0 is the old pool."""
    import pytest

    from ingest.synth import body_centre
    from reasoner.tiny.data import on_screen

    plain = sample_windows(11, 3, 64)
    assert all(
        np.array_equal(a.frames, b.frames) and a.truth == b.truth
        for a, b in zip(plain, sample_windows(11, 3, 64, still_share=0.0), strict=True)
    )
    held_cars = 0
    for natural, w in zip(plain, sample_windows(11, 3, 64, still_share=1.0), strict=True):
        assert (w.t0, w.step, len(w.frames)) == (natural.t0, natural.step, len(natural.frames))
        assert w.truth != natural.truth and not np.array_equal(w.frames, natural.frames)
        end = w.t0 + len(w.frames) * w.step
        standing = [
            tr
            for tr in w.truth.tracks
            if tr.actor_kind != "bag" and (tr.t_in, tr.t_out) == (w.t0, end)
            and on_screen(tr, w.t0)
            and max(abs(k[1] - tr.keys[0][1]) for k in tr.keys) <= 0.04
        ]  # fmt: skip
        assert standing, "no actor held still"
        for tr in standing:
            kinds = {e.kind for e in w.truth.events if e.actor_id == tr.actor_id}
            assert kinds <= {"loiter", "stop", "park"}
            if tr.actor_kind == "person":
                assert kinds == {"loiter"}
                continue
            held_cars += 1
            x, y = body_centre(tr.actor_kind, *tr.position(w.t0), w.aspect)
            px, py = int(x * 63), int(y * 63)
            patch = w.frames[:, max(0, py - 2) : py + 3, max(0, px - 2) : px + 3].astype(int)
            # Per frame, the mean change from the first (sensor noise, lighting drift and anyone
            # passing in front move it a little; a car driving on, 20-40 levels).
            change = np.abs(patch - patch[0]).mean(axis=(1, 2, 3))
            assert np.median(change) < 10, f"a held car moved between frames: {change}"
    assert held_cars
    with pytest.raises(ValueError, match="still_share"):
        sample_windows(11, 1, 64, still_share=1.5)


def two_cars() -> tuple[Event, Event, Callable[[float], Window]]:
    """A red car parked in its bay from 4 s for 40 s and a blue car driving past at 70 s, no
    one else: (the park event, the cross event, two-clip 64 px windows starting at t0)."""
    spec = SceneSpec(seed=5, duration=120.0, events=("red_car_parks@4+40", "blue_car_crosses@70"),
                     width=160, height=120, people_per_min=0.0, cars_per_min=0.0)  # fmt: skip
    scene = Scene.from_spec(spec)
    park = next(e for e in scene.truth.events if e.kind == "park")
    cross = next(e for e in scene.truth.events if e.kind == "cross")

    def window(t0: float) -> Window:
        return Window(5, t0, 1.0, render_window(scene, t0, 1.0, 8, 64), scene.truth)

    return park, cross, window


def test_moved_pairs_link_a_moving_actors_body_across_frames_and_leave_a_parked_one_out() -> None:
    """A blue car driving past yields a pair for every two frames where its body sits in
    different patches, pointing at those very patches (the ones `token_labels` marks); a red
    car standing in its bay yields none."""
    from reasoner.tiny.labels import moved_pairs, token_labels

    park, cross, window = two_cars()
    grid, per_frame = 8, 64

    parked = window(park.t_start + 2.0)
    assert moved_pairs(parked, grid).shape == (0, 3)

    driving = window(cross.t_start + 1.5)
    pairs = moved_pairs(driving, grid)
    body = token_labels(driving, grid).any(axis=-1)  # (clips, 4*L): the patches with a body
    seen = {
        (c, i): int(np.flatnonzero(body[c, i * per_frame : (i + 1) * per_frame])[0])
        for c in range(2)
        for i in range(4)
        if body[c, i * per_frame : (i + 1) * per_frame].any()
    }
    expected = {
        (c, i * per_frame + seen[c, i], j * per_frame + seen[c, j])
        for (c, i) in seen
        for (d, j) in seen
        if d == c and j > i and seen[c, i] != seen[c, j]
    }
    assert len(expected) >= 4  # it moves within both clips
    assert {tuple(int(v) for v in row) for row in pairs} == expected


def test_motion_labels_mark_a_passing_car_moving_and_a_parked_one_still() -> None:
    """The patches under a car driving past are labelled moving, those under a car standing
    in its bay still, with the actor kind beside them; every other patch is left out."""
    from reasoner.tiny.labels import (
        MOTION_IGNORE,
        MOTION_KINDS,
        MOTION_MOVING,
        MOTION_STILL,
        motion_labels,
        token_labels,
    )

    park, cross, window = two_cars()

    for t0, expected in ((park.t_start + 2.0, MOTION_STILL), (cross.t_start + 1.5, MOTION_MOVING)):
        w = window(t0)
        labels, kinds = motion_labels(w, 8)
        body = token_labels(w, 8).any(axis=-1)  # the patches under a body
        assert labels.shape == kinds.shape == body.shape
        assert set(np.unique(labels[body]).tolist()) == {expected}
        assert bool((labels[~body] == MOTION_IGNORE).all())
        assert bool((kinds[body] == MOTION_KINDS.index("car")).all())
