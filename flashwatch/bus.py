"""The bus seam between ingest, encoder and alert sinks (DESIGN.md §1, §3).

`Bus` is what every role codes against: publish keyed bytes to a topic, consume records
as a member of a consumer group, and commit explicitly once the work they carry is
durable elsewhere (at-least-once: a consumer that crashes before committing sees the
same records again). Two implementations: `InProcessBus` here for `flashwatch serve`,
and the Kafka one in `ingest/` for distributed mode.

The in-process bus is bounded: each topic keeps at most `capacity` records and drops
the oldest beyond that, counting every record a group lost that way (`dropped`), so a
slow encoder degrades freshness instead of growing memory without limit.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Record:
    """One message as a consumer sees it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


@runtime_checkable
class Consumer(Protocol):
    """One consumer-group member reading one topic."""

    def poll(self, max_records: int = 64, timeout_s: float = 1.0) -> list[Record]:
        """Next records after this group's position; [] after timeout_s."""
        ...

    def commit(self, records: list[Record]) -> None:
        """Mark these records (and everything before them) done for the group."""
        ...

    def rewind(self) -> None:
        """Go back to the last committed position (e.g. after a failed memory write)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Bus(Protocol):
    """Publish keyed records; hand out consumers. Implementations must be thread-safe."""

    def publish(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Send one record; raises on failure (the caller keeps it for a retry)."""
        ...

    def flush(self, timeout_s: float | None = None) -> None:
        """Block until every published record is acknowledged by the bus."""
        ...

    def consumer(self, topic: str, group: str) -> Consumer: ...

    def dead_letter(self, record: Record, reason: str) -> None:
        """Copy a poison record to the dead-letter topic, the reason in an `fw-reason` header."""
        ...

    def close(self) -> None: ...


@dataclass
class _Topic:
    log: deque[Record] = field(default_factory=deque)
    next_offset: int = 0


@dataclass
class _Group:
    position: int = 0
    committed: int = 0
    dropped: int = 0


class InProcessBus:
    """Bounded, thread-safe, single-partition topics with consumer-group positions."""

    def __init__(self, capacity: int = 1024, dead_letter_topic: str = "fw.dead-letter") -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.dead_letter_topic = dead_letter_topic
        self._topics: dict[str, _Topic] = {}
        self._groups: dict[tuple[str, str], _Group] = {}
        self._cond = threading.Condition()
        self._closed = False

    def publish(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("bus is closed")
            t = self._topics.setdefault(topic, _Topic())
            t.log.append(Record(topic, 0, t.next_offset, key, value, tuple(headers or ())))
            t.next_offset += 1
            while len(t.log) > self.capacity:
                gone = t.log.popleft()
                for (gtopic, _), g in self._groups.items():
                    if gtopic == topic and g.position <= gone.offset:
                        g.dropped += 1
                        g.position = gone.offset + 1
                        g.committed = max(g.committed, g.position)
            self._cond.notify_all()

    def flush(self, timeout_s: float | None = None) -> None:
        """Nothing to wait for: publish() returns once the record is in the queue."""

    def dead_letter(self, record: Record, reason: str) -> None:
        headers = [
            ("fw-reason", reason[:1000].encode()),
            ("fw-topic", record.topic.encode()),
            ("fw-offset", str(record.offset).encode()),
        ]
        self.publish(self.dead_letter_topic, record.value, key=record.key, headers=headers)

    def consumer(self, topic: str, group: str) -> InProcessConsumer:
        with self._cond:
            self._group(topic, group)
        return InProcessConsumer(self, topic, group)

    def _poll(self, topic: str, group: str, max_records: int, timeout_s: float) -> list[Record]:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            g = self._group(topic, group)
            while True:
                t = self._topics.get(topic)
                if t is not None and g.position < t.next_offset and t.log:
                    first = t.log[0].offset
                    start = max(g.position, first) - first
                    out = [t.log[i] for i in range(start, min(len(t.log), start + max_records))]
                    if out:
                        g.position = out[-1].offset + 1
                        return out
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    return []
                self._cond.wait(remaining)

    def _commit(self, group: str, records: list[Record]) -> None:
        with self._cond:
            for r in records:
                g = self._group(r.topic, group)
                g.committed = max(g.committed, r.offset + 1)

    def _rewind(self, topic: str, group: str) -> None:
        with self._cond:
            g = self._group(topic, group)
            t = self._topics.get(topic)
            first = t.log[0].offset if t is not None and t.log else g.committed
            g.position = max(g.committed, first)

    def dropped(self, topic: str, group: str) -> int:
        """Records this group never saw because the topic overflowed."""
        with self._cond:
            return self._group(topic, group).dropped

    def lag(self, topic: str, group: str) -> int:
        with self._cond:
            t = self._topics.get(topic)
            return 0 if t is None else t.next_offset - self._group(topic, group).position

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _group(self, topic: str, group: str) -> _Group:
        key = (topic, group)
        g = self._groups.get(key)
        if g is None:
            t = self._topics.get(topic)
            first = t.log[0].offset if t is not None and t.log else 0
            g = self._groups[key] = _Group(position=first, committed=first)
        return g


class InProcessConsumer:
    """A group member of an `InProcessBus` topic."""

    def __init__(self, bus: InProcessBus, topic: str, group: str) -> None:
        self.bus, self.topic, self.group = bus, topic, group

    def poll(self, max_records: int = 64, timeout_s: float = 1.0) -> list[Record]:
        return self.bus._poll(self.topic, self.group, max_records, timeout_s)

    def commit(self, records: list[Record]) -> None:
        self.bus._commit(self.group, records)

    def rewind(self) -> None:
        self.bus._rewind(self.topic, self.group)

    def close(self) -> None:
        """Nothing to release: positions live in the bus."""
