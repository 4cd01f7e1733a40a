"""The acceptance checker (shared/ACCEPTANCE.md, after Kafka's `validate_delivery` and Jepsen):
compare ingest's `Ledger` (every clip id produced, and whether the bus acknowledged it) with
the clip ids memory holds.

* `lost`: acknowledged by the bus, not in memory. Must be 0.
* `duplicated`: clip ids memory holds more than once (memory is keyed by id, so a redelivery
  must overwrite, never add). Must be 0. Duplicates *in delivery* are fine and not counted.
* `gaps`: produced clips missing from memory *inside* a camera/level timeline, i.e. between
  its first and last stored clip (holes a query would see), acknowledged or not.
* `aborted`: produced but never acknowledged (dropped by the bounded bus buffer, or still
  unacknowledged at the end); `recovered` of those are in memory anyway (an ack that was lost
  in the outage, the record itself was not).
* `unexpected`: in memory but never produced (for the scope checked). Must be 0.

`disorder` (D5) counts neighbouring clips of one camera and level whose times are not strictly
increasing and non-overlapping, or clips whose own four frame times are not increasing.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from flashwatch.messages import ClipTokens
from ingest.ledger import ClipId, Ledger

FAR_FUTURE = 4_000_000_000.0  # 2096: beyond every clip a test writes


@dataclass(frozen=True)
class Report:
    produced: int
    acked: int
    in_memory: int
    lost: int
    duplicated: int
    gaps: int
    aborted: int
    recovered: int
    unexpected: int
    disorder: int

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.unexpected == 0

    def line(self, scenario: str) -> str:
        return f"{scenario} checker: " + " ".join(f"{k}={v}" for k, v in asdict(self).items())


def memory_dump(store: object, cameras: Iterable[int], levels: Iterable[int]) -> list[ClipTokens]:
    """Every clip the store holds for these cameras and levels, per level oldest first."""
    out: list[ClipTokens] = []
    for cam, lvl in itertools.product(sorted(set(cameras)), sorted(set(levels))):
        out += store.range(cam, lvl, 0.0, FAR_FUTURE)  # type: ignore[attr-defined]
    return out


def disorder(clips: Iterable[ClipTokens]) -> int:
    """D5: order violations in the per-(camera, level) timelines, in the order given."""
    timelines: dict[tuple[int, int], list[ClipTokens]] = defaultdict(list)
    bad = 0
    for c in clips:
        timelines[(c.camera_id, c.level)].append(c)
        bad += any(b <= a for a, b in itertools.pairwise(c.t))
    for line in timelines.values():
        bad += sum(b.t[0] <= a.t[3] for a, b in itertools.pairwise(line))
    return bad


def check(ledger: Ledger, memory: Iterable[ClipTokens]) -> Report:
    clips = list(memory)
    counts = Counter(c.clip_id for c in clips)
    held = set(counts)
    produced, acked = set(ledger.produced), set(ledger.acked)
    aborted = produced - acked
    stored_t0: dict[tuple[int, int], list[int]] = defaultdict(list)
    for cam, lvl, t0 in held:
        stored_t0[(cam, lvl)].append(t0)
    bounds = {k: (min(v), max(v)) for k, v in stored_t0.items()}
    gaps = 0
    for cid in produced - held:
        lo_hi = bounds.get(cid[:2])
        gaps += lo_hi is not None and lo_hi[0] < cid[2] < lo_hi[1]
    return Report(
        produced=len(produced),
        acked=len(acked),
        in_memory=len(held),
        lost=len(acked - held),
        duplicated=sum(n > 1 for n in counts.values()),
        gaps=gaps,
        aborted=len(aborted),
        recovered=len(aborted & held),
        unexpected=len(held - produced),
        disorder=disorder(clips),
    )


def missing(ledger: Ledger, memory: Iterable[ClipTokens]) -> list[ClipId]:
    """The lost ids themselves (for assertion messages), oldest first."""
    held = {c.clip_id for c in memory}
    return sorted(set(ledger.acked) - held, key=lambda c: (c[2], c[0], c[1]))
