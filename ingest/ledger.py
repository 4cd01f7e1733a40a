"""The delivery ledger of the acceptance harness (ACCEPTANCE.md, "validate_delivery").

Ingest records every clip id it produced and whether the bus acknowledged it; a checker
compares that with memory and reports lost / duplicated / gaps. Wire it as

    ledger = Ledger()
    bus = KafkaBus(..., on_delivery=ledger.delivery)
    publish = ledger.wrap(clip_publisher(bus, topic))

With the in-process bus, `publish()` returning is the acknowledgement, so `wrap(...,
acked_on_return=True)` records both at once. Thread-safe; optionally appends JSON lines to
a file so a checker in another process (or after a crash) can read it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import msgspec

from flashwatch.messages import Clip, clip_key

ClipId = tuple[int, int, int]


class _ClipHead(msgspec.Struct, forbid_unknown_fields=False):
    """Just the fields of a Clip payload that make its id (frames are skipped, not copied)."""

    camera_id: int
    level: int
    t: tuple[float, float, float, float]


_head_decoder = msgspec.msgpack.Decoder(_ClipHead)


def clip_id_of(payload: bytes) -> ClipId | None:
    """The clip id inside an encoded Clip, or None for other payloads."""
    try:
        head = _head_decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return clip_key(head.camera_id, head.level, head.t[0])


@dataclass
class Ledger:
    """Clip ids produced, acknowledged and dropped, with counts (a duplicate is a count > 1)."""

    path: Path | None = None
    produced: dict[ClipId, int] = field(default_factory=dict)
    acked: dict[ClipId, int] = field(default_factory=dict)
    dropped: dict[ClipId, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _file: IO[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.path is not None:
            self._file = self.path.open("a", encoding="utf-8")

    def wrap(
        self, publish: Callable[[Clip], None], acked_on_return: bool = False
    ) -> Callable[[Clip], None]:
        """A publish callable that records each clip as produced (and acked, if asked)."""

        def publish_and_record(clip: Clip) -> None:
            self._record("produced", clip.clip_id)
            publish(clip)
            if acked_on_return:
                self._record("acked", clip.clip_id)

        return publish_and_record

    def delivery(self, topic: str, key: bytes | None, value: bytes, ok: bool) -> None:
        """`KafkaBus(on_delivery=...)` hook: the broker acknowledged (or we dropped) a record."""
        cid = clip_id_of(value)
        if cid is not None:
            self._record("acked" if ok else "dropped", cid)

    def unacked(self) -> set[ClipId]:
        with self._lock:
            return set(self.produced) - set(self.acked)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def _record(self, what: str, cid: ClipId) -> None:
        with self._lock:
            table: dict[ClipId, int] = getattr(self, what)
            table[cid] = table.get(cid, 0) + 1
            if self._file is not None:
                self._file.write(json.dumps({"event": what, "clip": list(cid)}) + "\n")
                self._file.flush()
