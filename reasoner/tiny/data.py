"""Training and evaluation samples for the tiny model, drawn from synthetic scenes.

A sample is one *window* of a scene (16-64 s, frames at ~1 fps, 4 frames per clip, rendered at
the model input size through the reference preprocessing) plus questions about it whose answers
come from the scene's ground truth. Questions use the wording the rest of FlashWatch asks:
`reasoner.answers.rule_question` (alert rules) and `relevance_question` (the zoom scan), next to
plain yes/no, colour, count and "when" questions. "When" answers are seconds from the first frame
of the window ("At 23 seconds."), which is what `reasoner.answers.mentioned_times` parses.

Labels are about what the sampled frames show: an actor counts as seen when its foot point is
inside the picture (0 <= x <= 1) at one of the sampled times, and an event counts when such a
frame falls inside the event's interval. Everything is deterministic in (seed, index).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from encoder_trt.preprocess import jpeg_round_trip, resize_frame
from ingest.synth import (
    COLOURS,
    Event,
    GroundTruth,
    Scene,
    SceneSpec,
    Track,
    hold_still,
)
from reasoner.answers import explain_question, relevance_question, rule_question

RENDER_W, RENDER_H = 160, 120  # rendered, then squashed to S x S like any camera frame
SCENE_SECONDS = 300.0
WINDOW_S = (16, 64)
FRAME_STEPS = (1.0, 2.0)  # seconds between frames: 80% / 20% of training windows
QUESTION_KINDS = (
    "presence", "happened", "relevance", "colour", "count", "when", "caption", "explain",
)  # fmt: skip
# "explain" last and at weight 0 in both mixes: the earlier stages' random streams (and the
# tokenizer built from them) stay what they were; `with_explain` gives it a share.
KIND_WEIGHTS = (0.22, 0.22, 0.10, 0.10, 0.10, 0.10, 0.16, 0.0)
# The product's questions first: presence and "did X happen" (the alert-rule wording).
FOCUS_WEIGHTS = (0.42, 0.42, 0.08, 0.02, 0.02, 0.02, 0.02, 0.0)
CAPTION_QUESTION = "What appears in the video?"
CAPTION_MAX = 5
EXPLAIN_MAX = 1
"""Items after "Yes," / "No," in an explain answer (an alert's reason). With 3, a 3 M model
repeated one actor three times ("a person in white crossing, a person in white crossing and
..."); one item keeps the reason short and grounded: "Yes, a person in white crossing."."""
# event kind -> (actor kind, question, description forms); {s} = the subject phrase
EVENTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "park": ("car", "Did {s} park?", ("{s} parked", "{s} is parked", "{s} parking")),
    "stop": ("car", "Did {s} stop on the road?", ("{s} stopped on the road", "{s} stopping")),
    "loiter": ("person", "Did {s} loiter?", ("{s} loitering", "{s} loitering on the walkway")),
    "drop": ("bag", "Did someone drop {s}?", ("a person dropping {s}", "{s} left behind")),
    "cross": ("person", "Did {s} cross the walkway?", ("{s} crossing", "{s} walking past")),
}
WHEN_VERBS = {"park": "park", "stop": "stop", "loiter": "start loitering", "drop": "get dropped"}
NUMBERS = ("zero", "one", "two", "three", "four", "five")


@dataclass(frozen=True)
class QA:
    kind: str  # one of QUESTION_KINDS
    question: str
    answer: str
    topic: str = ""  # yes/no questions: the event kind asked about, else the actor kind ("any")
    colour: str | None = None  # the colour the question names, if any


@dataclass
class Window:
    """Frames of one window and everything needed to ask about it."""

    seed: int
    t0: float  # time of the first frame (seconds in the scene)
    step: float  # seconds between frames
    frames: np.ndarray  # (N, S, S, 3) uint8, N a multiple of 4
    truth: GroundTruth
    aspect: float = RENDER_W / RENDER_H  # the camera's width / height before the squash

    @property
    def times(self) -> list[float]:
        return [self.t0 + i * self.step for i in range(len(self.frames))]

    @property
    def duration(self) -> float:
        return len(self.frames) * self.step


def subject(actor: str, colour: str | None) -> str:
    if actor == "person":
        return f"a person in {colour}" if colour else "a person"
    return f"a {colour} {actor}" if colour else f"a {actor}"


def on_screen(track: Track, t: float) -> bool:
    if not track.visible(t):
        return False
    x, _ = track.position(t)
    return 0.0 <= x <= 1.0


def seen_tracks(
    truth: GroundTruth, times: Sequence[float], actor: str, colour: str | None = None
) -> list[Track]:
    return [
        tr
        for tr in truth.tracks
        if tr.actor_kind == actor
        and (colour is None or tr.colour == colour)
        and any(on_screen(tr, t) for t in times)
    ]


def seen_events(
    truth: GroundTruth, times: Sequence[float], kind: str, colour: str | None = None
) -> list[Event]:
    """Events of `kind` (actor colour filter) that some sampled frame shows happening."""
    by_id = {tr.actor_id: tr for tr in truth.tracks}
    out = []
    for ev in truth.events:
        if ev.kind != kind or (colour is not None and ev.colour != colour):
            continue
        track = by_id.get(ev.actor_id)
        hits = [t for t in times if ev.t_start <= t < ev.t_end]
        if track is not None and kind != "drop":
            hits = [t for t in hits if on_screen(track, t)]
        if hits:
            out.append(ev)
    return sorted(out, key=lambda e: e.t_start)


def render_window(
    scene: Scene, t0: float, step: float, n_frames: int, size: int, jpeg: int | None = None
) -> np.ndarray:
    """(N, S, S, 3) frames; with `jpeg` (a quality), each one as the encoder gets it from
    ingest (`encoder_jpeg` at that quality, decoded): evaluation uses the product's path."""
    times = [t0 + i * step for i in range(n_frames)]
    frames = [resize_frame(f, size) for f in scene.clip(times)]
    if jpeg is not None:
        frames = [jpeg_round_trip(f, jpeg) for f in frames]
    return np.stack(frames)


def scene_for(seed: int, render: tuple[int, int] = (RENDER_W, RENDER_H)) -> Scene:
    spec = SceneSpec(
        seed=seed,
        duration=SCENE_SECONDS,
        width=render[0],
        height=render[1],
        people_per_min=2.5,
        cars_per_min=1.5,
        random_needles=7,
    )
    return Scene.from_spec(spec)


def sample_windows(
    seed: int,
    count: int,
    size: int,
    render: tuple[int, int] = (RENDER_W, RENDER_H),
    clips: tuple[int, int] = (WINDOW_S[0] // 4, WINDOW_S[1] // 4),
    jpeg: int | None = None,
    still_share: float = 0.0,
) -> list[Window]:
    """`count` windows of one scene; half of them start near a scripted (needle) event.

    Frames are rendered at `render` (W, H) and squashed to `size` like any camera frame (and
    with `jpeg`, sent through ingest's JPEG at that quality). With `still_share`, that share
    of the windows shows some of its people and cars held still (`held_still`)."""
    if not 0.0 <= still_share <= 1.0:
        raise ValueError(f"still_share must be in [0, 1], got {still_share}")
    scene = scene_for(seed, render)
    rng = np.random.default_rng([seed, 77])
    # Its own stream, so windows and questions stay what they were without it.
    still_rng = np.random.default_rng([seed, 79])
    needles = [e for e in scene.truth.events if e.needle and e.kind != "enter"]
    out = []
    for _ in range(count):
        step = FRAME_STEPS[0] if rng.random() < 0.8 else FRAME_STEPS[1]
        n_clips = int(rng.integers(clips[0], clips[1] + 1))
        if step == FRAME_STEPS[1]:
            n_clips = max(clips[0], n_clips // 2)
        dur = 4 * n_clips * step
        hi = SCENE_SECONDS - dur
        if needles and rng.random() < 0.5:
            ev = needles[int(rng.integers(len(needles)))]
            t0 = float(np.clip(ev.t_start - rng.uniform(0.0, dur), 0.0, hi))
        else:
            t0 = float(rng.uniform(0.0, hi))
        t0 = float(np.floor(t0))
        w_scene = scene
        if still_share > 0 and still_rng.random() < still_share:
            w_scene = held_still(scene, t0, step, 4 * n_clips, still_rng)
        frames = render_window(w_scene, t0, step, 4 * n_clips, size, jpeg)
        out.append(Window(seed, t0, step, frames, w_scene.truth, render[0] / render[1]))
    return out


def held_still(
    scene: Scene, t0: float, step: float, n_frames: int, rng: np.random.Generator
) -> Scene:
    """`scene` with about half of the people and cars seen in the window (at least one) standing
    still through it (people shuffling like loiterers), each where it was at one of the
    window's frames (`ingest.synth.hold_still` rewrites their events: loiter, park or stop).
    Why: the scripted activity has too few actors standing still to teach the encoder what
    "did not move" looks like."""
    times = [t0 + i * step for i in range(n_frames)]
    seen = {
        tr.actor_id: [t for t in times if on_screen(tr, t)]
        for tr in scene.truth.tracks
        if tr.actor_kind != "bag"
    }
    seen = {aid: ts for aid, ts in seen.items() if ts}
    if not seen:
        return scene
    ids = sorted(seen)
    chosen = [aid for aid in ids if rng.random() < 0.5] or [ids[int(rng.integers(len(ids)))]]
    holds = {aid: float(rng.choice(seen[aid])) for aid in chosen}
    truth = hold_still(scene.truth, holds, t0, times[-1] + step, rng)
    return Scene(truth, scene.width, scene.height, scene.fps)


# ----------------------------------------------------------------------------- questions


def _yes_no(flag: bool) -> str:
    return "Yes" if flag else "No"


def _pick_colour(rng: np.random.Generator, present: Sequence[str], positive: bool) -> str:
    pool = sorted(set(present)) if positive else [c for c in COLOURS if c not in present]
    pool = pool or list(COLOURS)
    return pool[int(rng.integers(len(pool)))]


def seen_any(w: Window) -> list[Track]:
    return [tr for kind in ("person", "car", "bag") for tr in seen_tracks(w.truth, w.times, kind)]


def presence_qa(w: Window, rng: np.random.Generator) -> QA:
    if rng.random() < 0.2:  # one attribute at a time: the easiest match to learn first
        hue = _pick_colour(rng, [tr.colour for tr in seen_any(w)], bool(rng.random() < 0.5))
        yes = any(tr.colour == hue for tr in seen_any(w))
        return QA("presence", f"Is there anything {hue} in the video? Answer yes or no.",
                  _yes_no(yes), "any", hue)  # fmt: skip
    actor = ("person", "car", "bag")[int(rng.integers(3))]
    present = [tr.colour for tr in seen_tracks(w.truth, w.times, actor)]
    colour: str | None = _pick_colour(rng, present, bool(rng.random() < 0.5))
    if rng.random() < 0.25:
        colour = None
    yes = bool(seen_tracks(w.truth, w.times, actor, colour))
    s = subject(actor, colour)
    forms = (f"Is there {s} in the video? Answer yes or no.", rule_question(s))
    return QA("presence", forms[int(rng.integers(2))], _yes_no(yes), actor, colour)


def _event_subject(kind: str, colour: str | None) -> str:
    return subject(EVENTS[kind][0], colour)


HARD_NEGATIVE = 0.3
"""Share of event questions asked about an actor on screen that does not do the event (a red
car driving past for "Did a red car park?"): without them the model learns presence only and
a rule about parking fires on every passing car of that colour. Evaluation asks at this share;
training may ask more (`decoy`; 0.6 in the video stage fixed most decoys and lost as much
elsewhere: BENCHMARKS, stop 23)."""


ANY_COLOUR = 0.15
"""Share of event questions that name no colour ("Did a car park?")."""


def _event_pick(
    w: Window, rng: np.random.Generator, yes_share: float = 0.0, decoy: float = HARD_NEGATIVE
) -> tuple[str, str | None, bool]:
    """(event kind, colour or None, answer) of one event question. With `yes_share` > 0 that
    share of the windows showing an event get a question about one of them (its kind drawn
    uniformly among the kinds shown); 0 draws no extra random numbers (the mix of before)."""
    if yes_share > 0.0:
        shown = {k: seen_events(w.truth, w.times, k) for k in EVENTS}
        kinds = [k for k, evs in shown.items() if evs]
        if kinds and rng.random() < yes_share:
            kind = kinds[int(rng.integers(len(kinds)))]
            ev = shown[kind][int(rng.integers(len(shown[kind])))]
            return kind, None if rng.random() < ANY_COLOUR else ev.colour, True
    kind = list(EVENTS)[int(rng.integers(len(EVENTS)))]
    present = [e.colour for e in seen_events(w.truth, w.times, kind)]
    actor = EVENTS[kind][0]
    decoys = sorted({tr.colour for tr in seen_tracks(w.truth, w.times, actor)} - set(present))
    if decoys and rng.random() < decoy:
        return kind, decoys[int(rng.integers(len(decoys)))], False
    colour: str | None = _pick_colour(rng, present, bool(rng.random() < 0.5))
    if rng.random() < ANY_COLOUR:
        colour = None
    return kind, colour, bool(seen_events(w.truth, w.times, kind, colour))


def happened_qa(
    w: Window, rng: np.random.Generator, yes_share: float = 0.0, decoy: float = HARD_NEGATIVE
) -> QA:
    kind, colour, yes = _event_pick(w, rng, yes_share, decoy)
    s = _event_subject(kind, colour)
    question, descs = EVENTS[kind][1], EVENTS[kind][2]
    if rng.random() < 0.5:
        text = question.format(s=s) + " Answer yes or no."
    else:
        text = rule_question(descs[int(rng.integers(len(descs)))].format(s=s))
    return QA("happened", text, _yes_no(yes), kind, colour)


def relevance_qa(
    w: Window, rng: np.random.Generator, yes_share: float = 0.0, decoy: float = HARD_NEGATIVE
) -> QA:
    kind, colour, yes = _event_pick(w, rng, yes_share, decoy)
    s = _event_subject(kind, colour)
    if kind in WHEN_VERBS and rng.random() < 0.5:
        user = f"When did {s} {WHEN_VERBS[kind]}?"
    else:
        user = EVENTS[kind][1].format(s=s)
    return QA("relevance", relevance_question(user), _yes_no(yes), kind, colour)


def colour_qa(w: Window, rng: np.random.Generator) -> QA | None:
    options: list[tuple[str, str]] = []
    for kind, text in (
        ("park", "What colour is the car that parked?"),
        ("stop", "What colour is the car that stopped?"),
        ("loiter", "What colour is the person who loitered?"),
        ("drop", "What colour is the dropped bag?"),
    ):
        evs = seen_events(w.truth, w.times, kind)
        if len({e.actor_id for e in evs}) == 1:
            options.append((text, evs[0].colour))
    bags = seen_tracks(w.truth, w.times, "bag")
    if len(bags) == 1:
        options.append(("What colour is the bag?", bags[0].colour))
    if not options:
        return None
    text, colour = options[int(rng.integers(len(options)))]
    return QA("colour", text, colour.capitalize())


def count_qa(w: Window, rng: np.random.Generator) -> QA:
    actor, plural = (("person", "people"), ("car", "cars"), ("bag", "bags"))[int(rng.integers(3))]
    n = min(len(seen_tracks(w.truth, w.times, actor)), len(NUMBERS) - 1)
    return QA("count", f"How many {plural} appear in the video?", str(n))


def when_qa(w: Window, rng: np.random.Generator) -> QA | None:
    options = []
    for kind, verb in WHEN_VERBS.items():
        for ev in seen_events(w.truth, w.times, kind):
            offset = ev.t_start - w.t0
            if 0.0 <= offset < w.duration:
                options.append((kind, verb, ev, offset))
                break
    if not options:
        return None
    kind, verb, ev, offset = options[int(rng.integers(len(options)))]
    colour = ev.colour
    first = seen_events(w.truth, w.times, kind, colour)[0]
    offset = max(0.0, first.t_start - w.t0)
    s = _event_subject(kind, colour)
    return QA("when", f"When did {s} {verb}?", f"At {round(offset)} seconds.")


def caption_qa(w: Window, rng: np.random.Generator) -> QA:
    """Everything seen, in order of first appearance: dense supervision that ties each actor's
    visual tokens to its words (one answer token per attribute instead of one yes/no bit)."""
    del rng
    times = w.times
    seen = []
    for tr in w.truth.tracks:
        hits = [t for t in times if on_screen(tr, t)]
        if hits:
            seen.append((hits[0], tr.actor_id, subject(tr.actor_kind, tr.colour)))
    seen.sort()
    items = [s for _, _, s in seen[:CAPTION_MAX]]
    if not items:
        return QA("caption", CAPTION_QUESTION, "Nothing.")
    text = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    return QA("caption", CAPTION_QUESTION, text[0].upper() + text[1:] + ".")


def seen_summary(w: Window, first: tuple[str, str] | None = None, limit: int = EXPLAIN_MAX) -> str:
    """What the window shows, events before bare actors, at most `limit` items: "A red car
    parked and a person in blue crossing." `first` = (event kind, colour) to name first."""
    items: list[tuple[int, float, str]] = []
    described: set[int] = set()
    for kind, (actor, _q, descs) in EVENTS.items():
        for ev in seen_events(w.truth, w.times, kind):
            rank = 0 if first == (kind, ev.colour) else 1
            items.append((rank, ev.t_start, descs[0].format(s=subject(actor, ev.colour))))
            described.add(ev.actor_id)
    for tr in seen_any(w):
        if tr.actor_id not in described:
            items.append((2, tr.t_in, subject(tr.actor_kind, tr.colour)))
    texts = list(dict.fromkeys(text for _, _, text in sorted(items)))[:limit]
    if not texts:
        return "Nothing is on screen."
    text = texts[0] if len(texts) == 1 else ", ".join(texts[:-1]) + " and " + texts[-1]
    return text[0].upper() + text[1:] + "."


def explain_qa(w: Window, rng: np.random.Generator, yes_share: float = 0.0) -> QA:
    """An alert's reason, asked as the engine's explain call asks it (`explain_question`):
    "Yes, ..." or "No, ..." (the same first token the rule's yes/no score reads), then what
    the window shows, the asked-about event first when it happened. One sentence: with
    "Yes. A red car parked." the model learnt to go on after a full stop, and "When ...?"
    answers grew a tail ("At 1 seconds. A person in red, ...")."""
    kind, colour, yes = _event_pick(w, rng, yes_share)
    descs = EVENTS[kind][2]
    desc = descs[int(rng.integers(len(descs)))].format(s=_event_subject(kind, colour))
    named = None
    if yes:
        evs = seen_events(w.truth, w.times, kind, colour)
        named = (kind, evs[0].colour)
    summary = seen_summary(w, named)
    answer = f"{_yes_no(yes)}, {summary[0].lower()}{summary[1:]}"
    return QA("explain", explain_question(desc), answer)


def with_explain(weights: Sequence[float], share: float) -> tuple[float, ...]:
    """`weights` scaled to 1 - share, with `share` on "explain" (the last kind)."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"explain share must be in [0, 1), got {share}")
    base = [float(x) for x in weights[:-1]]
    total = sum(base)
    return (*(x * (1.0 - share) / total for x in base), share)


def questions_for(
    w: Window,
    rng: np.random.Generator,
    n: int,
    weights: Sequence[float] = KIND_WEIGHTS,
    event_yes: float = 0.0,
    decoy: float = HARD_NEGATIVE,
) -> list[QA]:
    """n questions of mixed kinds about one window (kinds without a valid question re-drawn);
    `event_yes`: see `_event_pick` (training only; evaluation asks the natural mix)."""
    makers: dict[str, Callable[[Window, np.random.Generator], QA | None]] = {
        "presence": presence_qa,
        "happened": partial(happened_qa, yes_share=event_yes, decoy=decoy),
        "relevance": partial(relevance_qa, yes_share=event_yes, decoy=decoy),
        "colour": colour_qa,
        "count": count_qa,
        "when": when_qa,
        "caption": caption_qa,
        "explain": partial(explain_qa, yes_share=event_yes),
    }
    out: list[QA] = []
    while len(out) < n:
        kind = QUESTION_KINDS[int(rng.choice(len(QUESTION_KINDS), p=weights))]
        qa = makers[kind](w, rng)
        if qa is not None:
            out.append(qa)
    return out


def corpus_texts() -> list[str]:
    """Every phrase the questions and answers can use (for the tokenizer's merges)."""
    rng = np.random.default_rng(0)
    truth = scene_for(0).truth
    texts = []
    for i in range(300):
        t0 = float(rng.uniform(0, SCENE_SECONDS - 64))
        w = Window(0, t0, 1.0, np.zeros((4 * int(rng.integers(4, 17)), 1, 1, 3), np.uint8), truth)
        texts += [q.question for q in questions_for(w, np.random.default_rng(i), 8)]
        texts += [q.answer for q in questions_for(w, np.random.default_rng(i + 1000), 8)]
    for kind, (actor, question, descs) in EVENTS.items():
        for c in (*COLOURS, None):
            s = subject(actor, c)
            texts += [question.format(s=s), *(d.format(s=s) for d in descs)]
            texts += [rule_question(s), relevance_question(question.format(s=s))]
            if kind in WHEN_VERBS:
                texts.append(f"When did {s} {WHEN_VERBS[kind]}?")
    texts += [c.capitalize() for c in COLOURS] + ["Yes", "No", "Nothing.", CAPTION_QUESTION]
    texts += [f"At {i} seconds." for i in range(0, 130)]
    return texts
