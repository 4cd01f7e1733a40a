"""Ground truth of a synthetic scene: actor tracks and event intervals, queries, JSON.

Why separate from rendering: evaluation, training-data generation and alert scoring only need
"what happened when", never pixels, and must be able to load it back from the ``.truth.json``
written next to a video without importing numpy drawing code.

Coordinates are normalised to the frame (x and y in 0..1, y down), so the truth does not
depend on the render size. Times are seconds from the start of the footage. Intervals are
half-open ``[t_start, t_end)``.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ACTOR_KINDS = ("person", "car", "bag")
COLOURS = ("red", "blue", "white", "black", "green", "yellow")
# enter/leave: arriving at / departing from a stop; cross: a pass through the view without
# stopping; stop: a car halting on the road; park: a car standing in a parking bay; loiter: a
# person lingering on the walkway; drop: a bag left behind (actor_kind "bag", its colour).
EVENT_KINDS = ("enter", "cross", "stop", "park", "loiter", "leave", "drop")

Box = tuple[float, float, float, float]  # x0, y0, x1, y1, normalised
Key = tuple[float, float, float]  # t, x, y (normalised foot point: bottom centre of the actor)


@dataclass(frozen=True)
class Event:
    """One ground-truth event. ``needle`` marks explicitly scripted events (vs background)."""

    kind: str
    actor_kind: str
    colour: str
    t_start: float
    t_end: float
    region: str
    actor_id: int = -1
    needle: bool = False

    def overlaps(self, t0: float, t1: float) -> bool:
        """True if the event interval intersects ``[t0, t1)`` (a point query when t0 == t1)."""
        if t0 == t1:
            return self.t_start <= t0 < self.t_end
        return self.t_start < t1 and t0 < self.t_end


@dataclass(frozen=True)
class Track:
    """Where one actor is: piecewise-linear foot positions between keyframes.

    Visible on ``[keys[0].t, keys[-1].t)``. Pure data so rendering any time t is a lookup
    (stateless), which is what makes sampling sparse frames from hours of footage cheap.
    """

    actor_id: int
    actor_kind: str
    colour: str
    keys: tuple[Key, ...]
    needle: bool = False

    @property
    def t_in(self) -> float:
        return self.keys[0][0]

    @property
    def t_out(self) -> float:
        return self.keys[-1][0]

    def visible(self, t: float) -> bool:
        return self.t_in <= t < self.t_out

    def position(self, t: float) -> tuple[float, float]:
        """Foot point at time t (clamped to the first/last keyframe)."""
        keys = self.keys
        times = [k[0] for k in keys]
        i = bisect.bisect_right(times, t)
        if i <= 0:
            return keys[0][1], keys[0][2]
        if i >= len(keys):
            return keys[-1][1], keys[-1][2]
        (ta, xa, ya), (tb, xb, yb) = keys[i - 1], keys[i]
        f = 0.0 if tb <= ta else (t - ta) / (tb - ta)
        return xa + f * (xb - xa), ya + f * (yb - ya)

    def moving(self, t: float) -> bool:
        """True while the actor changes position (drives walking animation)."""
        a = self.position(t - 0.05)
        b = self.position(t + 0.05)
        return abs(a[0] - b[0]) + abs(a[1] - b[1]) > 1e-6


@dataclass
class GroundTruth:
    """Everything that happens in a synthetic scene, with the queries tests and evals need."""

    seed: int
    duration: float
    tracks: list[Track] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    regions: dict[str, Box] = field(default_factory=dict)

    # -- queries -------------------------------------------------------------------------
    def active(
        self,
        t0: float,
        t1: float,
        kind: str | None = None,
        actor_kind: str | None = None,
        colour: str | None = None,
        needle: bool | None = None,
    ) -> list[Event]:
        """Events overlapping ``[t0, t1)`` (filters optional), sorted by start time."""
        out = [
            e
            for e in self.events
            if e.overlaps(t0, t1)
            and (kind is None or e.kind == kind)
            and (actor_kind is None or e.actor_kind == actor_kind)
            and (colour is None or e.colour == colour)
            and (needle is None or e.needle == needle)
        ]
        return sorted(out, key=lambda e: (e.t_start, e.actor_id, e.kind))

    def visible(
        self, t: float, actor_kind: str | None = None, colour: str | None = None
    ) -> list[Track]:
        """Tracks on screen at time t (occluded ones included)."""
        return [
            tr
            for tr in self.tracks
            if tr.visible(t)
            and (actor_kind is None or tr.actor_kind == actor_kind)
            and (colour is None or tr.colour == colour)
        ]

    def count(self, actor_kind: str, t: float, colour: str | None = None) -> int:
        """How many actors of a kind (and colour) are on screen at time t."""
        return len(self.visible(t, actor_kind, colour))

    def present(self, actor_kind: str, colour: str | None, t0: float, t1: float) -> bool:
        """Whether such an actor is on screen at any time in ``[t0, t1]``."""
        return any(
            tr.t_in <= t1
            and t0 < tr.t_out
            and tr.actor_kind == actor_kind
            and (colour is None or tr.colour == colour)
            for tr in self.tracks
        )

    def happened(
        self,
        kind: str,
        t0: float,
        t1: float,
        actor_kind: str | None = None,
        colour: str | None = None,
    ) -> bool:
        """'Did X happen in this window?': an event of that kind overlaps ``[t0, t1)``."""
        return bool(self.active(t0, t1, kind, actor_kind, colour))

    def first(
        self,
        kind: str,
        t0: float = 0.0,
        t1: float = float("inf"),
        actor_kind: str | None = None,
        colour: str | None = None,
    ) -> Event | None:
        """Earliest matching event overlapping ``[t0, t1)`` (for "when" questions)."""
        found = self.active(t0, t1, kind, actor_kind, colour)
        return found[0] if found else None

    # -- JSON ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "flashwatch-synth-truth/1",
            "seed": self.seed,
            "duration": self.duration,
            "regions": {k: list(v) for k, v in self.regions.items()},
            "tracks": [{**asdict(tr), "keys": [list(k) for k in tr.keys]} for tr in self.tracks],
            "events": [asdict(e) for e in self.events],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GroundTruth:
        def box(v: list[float]) -> Box:
            return (float(v[0]), float(v[1]), float(v[2]), float(v[3]))

        def key(v: list[float]) -> Key:
            return (float(v[0]), float(v[1]), float(v[2]))

        return cls(
            seed=int(data["seed"]),
            duration=float(data["duration"]),
            regions={k: box(v) for k, v in data.get("regions", {}).items()},
            tracks=[
                Track(
                    actor_id=int(t["actor_id"]),
                    actor_kind=str(t["actor_kind"]),
                    colour=str(t["colour"]),
                    keys=tuple(key(k) for k in t["keys"]),
                    needle=bool(t.get("needle", False)),
                )
                for t in data["tracks"]
            ],
            events=[Event(**e) for e in data["events"]],
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> GroundTruth:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> Path:
        out = Path(path)
        out.write_text(self.to_json(), encoding="utf-8")
        return out

    @classmethod
    def load(cls, path: str | Path) -> GroundTruth:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))
