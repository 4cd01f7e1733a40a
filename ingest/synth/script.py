"""Scripted activity: turns event specs and a seed into actor tracks plus ground-truth events.

Why a script, not a simulation: every actor's path is fixed up front as keyframes, so the
renderer can draw any time t without stepping through earlier frames (hours of footage are
as cheap as the frames actually sampled) and the ground truth is exact by construction.

Layout (normalised, fixed for every seed so a tiny model learns one camera geometry; seeds
only change texture, tint and the activity): fence line at the top, three parking bays, a
two-lane road, a walkway near the bottom.

Event specs (CLI and API): ``COLOUR_ACTOR_VERB[_COLOUR_bag]@T[+DUR]``, e.g.
``red_car_parks@120`` (stays parked to the end), ``red_car_parks@120+60`` (leaves after 60 s),
``blue_car_stops@30+10``, ``white_person_loiters@300+40``, ``green_person_crosses@5``,
``black_person_drops_yellow_bag@60``. T is when the actor enters the view.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ingest.synth.truth import COLOURS, Box, Event, GroundTruth, Key, Track

FENCE_Y = 0.27
BAY_XS = (0.2, 0.5, 0.8)
BAY_FOOT_Y = 0.47
LANE_YS = (0.60, 0.69)  # foot rows of the two road lanes (left→right, right→left)
WALK_Y0, WALK_Y1 = 0.80, 0.90  # walkway band of foot rows
REGIONS: dict[str, Box] = {
    "fence": (0.0, 0.0, 1.0, FENCE_Y + 0.02),
    "parking": (0.0, 0.33, 1.0, 0.50),
    **{f"bay{i}": (x - 0.1, 0.33, x + 0.1, 0.50) for i, x in enumerate(BAY_XS)},
    "road": (0.0, 0.52, 1.0, 0.74),
    "walkway": (0.0, 0.76, 1.0, 0.93),
}
CAR_SPEED = (0.12, 0.2)  # frame widths per second
PERSON_SPEED = (0.045, 0.08)
_OFF_L, _OFF_R = -0.15, 1.15  # off-screen x for entering/leaving
Span = tuple[str, str, str, float, float, str]  # kind, actor_kind, colour, t0, t1, region

_VERBS = {"crosses": "cross", "parks": "park", "stops": "stop", "loiters": "loiter"}
_SPEC = re.compile(
    r"^(?P<colour>[a-z]+)_(?P<actor>person|car)_(?P<verb>crosses|parks|stops|loiters|drops)"
    r"(?:_(?P<bag>[a-z]+)_bag)?@(?P<t>\d+(?:\.\d+)?)(?:\+(?P<dur>\d+(?:\.\d+)?))?$"
)


@dataclass(frozen=True)
class EventSpec:
    """An explicitly scripted (needle) event: what, who, when; ``dwell`` None = default."""

    verb: str  # cross | park | stop | loiter | drop
    actor_kind: str  # person | car
    colour: str
    t: float
    dwell: float | None = None
    bag_colour: str | None = None

    @classmethod
    def parse(cls, text: str) -> EventSpec:
        """Parse ``red_car_parks@120[+60]`` style specs; ValueError with the rule if bad."""
        m = _SPEC.match(text.strip())
        if not m:
            raise ValueError(
                f"bad event spec {text!r}: expected COLOUR_(person|car)_"
                "(crosses|parks|stops|loiters|drops[_COLOUR_bag])@SECONDS[+DWELL]"
            )
        verb = _VERBS.get(m["verb"], "drop")
        spec = cls(
            verb=verb,
            actor_kind=m["actor"],
            colour=m["colour"],
            t=float(m["t"]),
            dwell=float(m["dur"]) if m["dur"] else None,
            bag_colour=m["bag"] or ("black" if verb == "drop" else None),
        )
        spec.check()
        return spec

    def check(self) -> None:
        for c in (self.colour, self.bag_colour):
            if c is not None and c not in COLOURS:
                raise ValueError(f"unknown colour {c!r}; expected one of {COLOURS}")
        allowed = {"car": ("cross", "park", "stop"), "person": ("cross", "loiter", "drop")}
        if self.verb not in allowed.get(self.actor_kind, ()):
            raise ValueError(f"a {self.actor_kind} cannot {self.verb}")


class _Builder:
    """Accumulates tracks and events with fresh actor ids."""

    def __init__(self) -> None:
        self.tracks: list[Track] = []
        self.events: list[Event] = []

    def add(self, kind: str, colour: str, keys: list[Key], needle: bool, spans: list[Span]) -> int:
        aid = len(self.tracks)
        self.tracks.append(Track(aid, kind, colour, tuple(keys), needle))
        for ev_kind, ev_actor, ev_colour, t0, t1, region in spans:
            if t1 > t0:
                self.events.append(Event(ev_kind, ev_actor, ev_colour, t0, t1, region, aid, needle))
        return aid


def _walk(keys: list[Key], x: float, y: float, speed: float) -> None:
    """Append a keyframe reached at constant speed from the last one."""
    t0, x0, y0 = keys[-1]
    dist = float(np.hypot(x - x0, y - y0))
    keys.append((round(t0 + dist / speed, 3), x, y))


def _wander(keys: list[Key], until: float, rng: np.random.Generator) -> None:
    """Loiter from the last keyframe's spot to `until`: small random steps, each ~3 s, then
    back to the spot."""
    _, x, y = keys[-1]
    while keys[-1][0] < until - 3.0:
        tx = x + float(rng.uniform(-0.04, 0.04))
        ty = float(np.clip(y + rng.uniform(-0.02, 0.02), WALK_Y0, WALK_Y1))
        keys.append((keys[-1][0] + 3.0, tx, ty))
    keys.append((until, x, y))


def _hold(keys: list[Key], seconds: float) -> None:
    t0, x0, y0 = keys[-1]
    keys.append((round(t0 + seconds, 3), x0, y0))


def _cross(
    b: _Builder, kind: str, colour: str, t: float, rng: np.random.Generator, needle: bool
) -> None:
    left_to_right = bool(rng.integers(2))
    xa, xb = (_OFF_L, _OFF_R) if left_to_right else (_OFF_R, _OFF_L)
    if kind == "car":
        y, speed = LANE_YS[0 if left_to_right else 1], float(rng.uniform(*CAR_SPEED))
        region = "road"
    else:
        y, speed = float(rng.uniform(WALK_Y0, WALK_Y1)), float(rng.uniform(*PERSON_SPEED))
        region = "walkway"
    keys: list[Key] = [(t, xa, y)]
    _walk(keys, xb, y, speed)
    b.add(kind, colour, keys, needle, [("cross", kind, colour, t, keys[-1][0], region)])


def _park(
    b: _Builder,
    spec: EventSpec,
    bay: int,
    end: float,
    rng: np.random.Generator,
    needle: bool,
) -> None:
    """Drive in on the near lane, pull up into a bay, stay (to ``end`` or for dwell), leave."""
    speed, bx = float(rng.uniform(*CAR_SPEED)), BAY_XS[bay]
    keys: list[Key] = [(spec.t, _OFF_L, LANE_YS[0])]
    _walk(keys, bx, LANE_YS[0], speed)
    _walk(keys, bx, BAY_FOOT_Y, speed * 0.5)
    arrive = keys[-1][0]
    c = spec.colour
    spans: list[Span] = [("enter", "car", c, spec.t, arrive, "road")]
    if spec.dwell is None:
        keys.append((max(end, arrive + 1.0), bx, BAY_FOOT_Y))
        spans.append(("park", "car", c, arrive, keys[-1][0], f"bay{bay}"))
    else:
        _hold(keys, spec.dwell)
        spans.append(("park", "car", c, arrive, keys[-1][0], f"bay{bay}"))
        depart = keys[-1][0]
        _walk(keys, bx, LANE_YS[0], speed * 0.5)
        _walk(keys, _OFF_R, LANE_YS[0], speed)
        spans.append(("leave", "car", c, depart, keys[-1][0], "road"))
    b.add("car", c, keys, needle, spans)


def _stop_or_loiter(b: _Builder, spec: EventSpec, rng: np.random.Generator, needle: bool) -> None:
    """A car halts on the road, or a person wanders in place on the walkway, then both leave."""
    c, kind = spec.colour, spec.actor_kind
    x_stop = float(rng.uniform(0.3, 0.7))
    if kind == "car":
        y, speed, region, verb = LANE_YS[0], float(rng.uniform(*CAR_SPEED)), "road", "stop"
        dwell = 10.0 if spec.dwell is None else spec.dwell
    else:
        y, speed = float(rng.uniform(WALK_Y0, WALK_Y1)), float(rng.uniform(*PERSON_SPEED))
        region, verb = "walkway", "loiter"
        dwell = 30.0 if spec.dwell is None else spec.dwell
    keys: list[Key] = [(spec.t, _OFF_L, y)]
    _walk(keys, x_stop, y, speed)
    arrive = keys[-1][0]
    if kind == "car":
        _hold(keys, dwell)
    else:
        _wander(keys, arrive + dwell, rng)
    depart = keys[-1][0]
    _walk(keys, _OFF_R, y, speed)
    spans = [
        ("enter", kind, c, spec.t, arrive, region),
        (verb, kind, c, arrive, depart, region),
        ("leave", kind, c, depart, keys[-1][0], region),
    ]
    b.add(kind, c, keys, needle, spans)


def _drop(b: _Builder, spec: EventSpec, end: float, rng: np.random.Generator, needle: bool) -> None:
    """A person walks in, pauses 2 s, leaves a bag that stays to the end, walks on."""
    y, speed = float(rng.uniform(WALK_Y0, WALK_Y1)), float(rng.uniform(*PERSON_SPEED))
    x_drop = float(rng.uniform(0.3, 0.7))
    keys: list[Key] = [(spec.t, _OFF_L, y)]
    _walk(keys, x_drop, y, speed)
    t_drop = keys[-1][0]
    _hold(keys, 2.0)
    _walk(keys, _OFF_R, y, speed)
    pc, bc = spec.colour, spec.bag_colour or "black"
    b.add("person", pc, keys, needle, [("cross", "person", pc, spec.t, keys[-1][0], "walkway")])
    bx = x_drop + 0.03
    bag_keys: list[Key] = [(t_drop + 1.0, bx, y), (max(end, t_drop + 2.0), bx, y)]
    b.add("bag", bc, bag_keys, needle, [("drop", "bag", bc, t_drop, t_drop + 2.0, "walkway")])


def random_specs(
    rng: np.random.Generator, duration: float, n: int, margin: float = 5.0
) -> list[EventSpec]:
    """n random needle events spread over the footage (training-data diversity)."""
    verbs = [("car", "park"), ("car", "stop"), ("person", "loiter"), ("person", "drop")]
    out: list[EventSpec] = []
    for _ in range(n):
        kind, verb = verbs[int(rng.integers(len(verbs)))]
        t = float(np.round(rng.uniform(0.0, max(0.0, duration - 60.0 - margin)), 1))
        out.append(
            EventSpec(
                verb,
                kind,
                COLOURS[int(rng.integers(len(COLOURS)))],
                t,
                dwell=float(np.round(rng.uniform(10.0, 40.0), 1)),
                bag_colour=COLOURS[int(rng.integers(len(COLOURS)))] if verb == "drop" else None,
            )
        )
    return sorted(out, key=lambda s: s.t)


def make_truth(
    seed: int,
    duration: float,
    events: list[EventSpec | str] | tuple[EventSpec | str, ...] = (),
    people_per_min: float = 2.0,
    cars_per_min: float = 1.0,
    random_needles: int = 0,
) -> GroundTruth:
    """Build the full script: background (Poisson crossings) plus needle events.

    Background actors are people crossing the walkway and cars passing on the road, never
    stopping; a rate of 0 disables them. Same arguments → identical truth.
    """
    duration = float(duration)
    b = _Builder()
    bg = np.random.default_rng([seed, 1])
    for kind, rate in (("person", people_per_min), ("car", cars_per_min)):
        if rate <= 0:
            continue
        t = float(bg.exponential(60.0 / rate))
        while t < duration:
            colour = COLOURS[int(bg.integers(len(COLOURS)))]
            _cross(b, kind, colour, round(t, 2), bg, needle=False)
            t += float(bg.exponential(60.0 / rate))
    specs = [EventSpec.parse(s) if isinstance(s, str) else s for s in events]
    specs += random_specs(np.random.default_rng([seed, 5]), duration, random_needles)
    n_park = 0
    for i, spec in enumerate(specs):
        spec.check()
        rng = np.random.default_rng([seed, 4, i])
        if spec.verb == "cross":
            _cross(b, spec.actor_kind, spec.colour, spec.t, rng, needle=True)
        elif spec.verb == "park":
            _park(b, spec, n_park % len(BAY_XS), duration, rng, needle=True)
            n_park += 1
        elif spec.verb in ("stop", "loiter"):
            _stop_or_loiter(b, spec, rng, needle=True)
        else:
            _drop(b, spec, duration, rng, needle=True)
    events_sorted = sorted(b.events, key=lambda e: (e.t_start, e.actor_id, e.kind))
    return GroundTruth(seed, float(duration), b.tracks, events_sorted, dict(REGIONS))


def _standing_event(kind: str, x: float, y: float) -> tuple[str, str] | None:
    """(event, region) of an actor standing with its foot at (x, y), or None for no event."""

    def inside(name: str) -> bool:
        x0, y0, x1, y1 = REGIONS[name]
        return x0 <= x <= x1 and y0 <= y <= y1

    if kind == "person" and inside("walkway"):
        return "loiter", "walkway"
    if kind == "car":
        bays = [f"bay{i}" for i in range(len(BAY_XS)) if inside(f"bay{i}")]
        if bays:
            return "park", bays[0]
        if inside("road"):
            return "stop", "road"
    return None


def hold_still(
    truth: GroundTruth,
    holds: dict[int, float],
    t0: float,
    t1: float,
    rng: np.random.Generator | None = None,
) -> GroundTruth:
    """The same scene with the actors in `holds` (actor id → the time whose position each
    keeps) standing still over ``[t0, t1)`` and absent outside it; their events become what
    standing there is: a person on the walkway loiters, a car in a bay parks, one on the road
    stops (elsewhere: no event). With `rng`, a held person shuffles about its spot the way a
    scripted loiterer does. Bags already stand still; other actors and events are untouched.

    Why: in the scripted activity only a needle stands still (one or two per five minutes), so
    an encoder trained on it met too few loiterers and stopped cars to learn "did not move"
    and memorised them instead (BENCHMARKS.md, stop 19). Held-still copies of any passer-by
    give every colour, place and kind standing still, labelled consistently.
    """
    if not t1 > t0:
        raise ValueError(f"hold_still needs t1 > t0, got [{t0}, {t1})")
    held = {tr.actor_id for tr in truth.tracks if tr.actor_id in holds and tr.actor_kind != "bag"}
    tracks: list[Track] = []
    events = [ev for ev in truth.events if ev.actor_id not in held]
    for tr in truth.tracks:
        if tr.actor_id not in held:
            tracks.append(tr)
            continue
        x, y = tr.position(holds[tr.actor_id])
        keys: list[Key] = [(t0, x, y)]
        if rng is not None and tr.actor_kind == "person":
            _wander(keys, t1, rng)
        else:
            keys.append((t1, x, y))
        tracks.append(Track(tr.actor_id, tr.actor_kind, tr.colour, tuple(keys), tr.needle))
        standing = _standing_event(tr.actor_kind, x, y)
        if standing is not None:
            kind, region = standing
            events.append(
                Event(kind, tr.actor_kind, tr.colour, t0, t1, region, tr.actor_id, tr.needle)
            )
    events.sort(key=lambda e: (e.t_start, e.actor_id, e.kind))
    return GroundTruth(truth.seed, truth.duration, tracks, events, dict(truth.regions))
