"""In-process bus: bounded drop-oldest with a counter, explicit commit, rewind."""

from __future__ import annotations

import threading

import pytest

from flashwatch.bus import Bus, Consumer, InProcessBus


def test_protocols_are_satisfied() -> None:
    bus = InProcessBus()
    assert isinstance(bus, Bus) and isinstance(bus.consumer("t", "g"), Consumer)


def test_drop_oldest_counts_what_the_group_lost() -> None:
    bus = InProcessBus(capacity=3)
    c = bus.consumer("clips", "enc")
    for i in range(5):
        bus.publish("clips", bytes([i]), key=b"cam")
    got = c.poll(max_records=10, timeout_s=0)
    assert [r.value for r in got] == [b"\x02", b"\x03", b"\x04"]
    assert bus.dropped("clips", "enc") == 2
    assert got[0].key == b"cam"


def test_uncommitted_records_come_back_after_rewind() -> None:
    bus = InProcessBus()
    c = bus.consumer("clips", "enc")
    for i in range(4):
        bus.publish("clips", bytes([i]))
    first = c.poll(max_records=2, timeout_s=0)
    c.commit(first)
    second = c.poll(max_records=2, timeout_s=0)
    assert [r.offset for r in second] == [2, 3]
    c.rewind()  # e.g. the memory write failed: nothing after the commit is lost
    assert [r.offset for r in c.poll(timeout_s=0)] == [2, 3]
    assert bus.lag("clips", "enc") == 0


def test_groups_are_independent() -> None:
    bus = InProcessBus()
    a, b = bus.consumer("t", "a"), bus.consumer("t", "b")
    bus.publish("t", b"x")
    assert [r.value for r in a.poll(timeout_s=0)] == [b"x"]
    assert [r.value for r in b.poll(timeout_s=0)] == [b"x"]


def test_poll_blocks_until_publish_or_timeout() -> None:
    bus = InProcessBus()
    c = bus.consumer("t", "g")
    assert c.poll(timeout_s=0.05) == []
    timer = threading.Timer(0.05, bus.publish, args=("t", b"late"))
    timer.start()
    got = c.poll(timeout_s=5)
    timer.join()
    assert [r.value for r in got] == [b"late"]


def test_concurrent_producers_lose_nothing_within_capacity() -> None:
    bus = InProcessBus(capacity=10_000)
    c = bus.consumer("t", "g")

    def produce(n: int) -> None:
        for i in range(500):
            bus.publish("t", f"{n}:{i}".encode())

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seen = []
    while batch := c.poll(max_records=256, timeout_s=0):
        seen += [r.value for r in batch]
    assert len(seen) == len(set(seen)) == 2000
    assert bus.dropped("t", "g") == 0


def test_closed_bus_refuses_publish() -> None:
    bus = InProcessBus()
    bus.close()
    with pytest.raises(RuntimeError):
        bus.publish("t", b"x")
    with pytest.raises(ValueError):
        InProcessBus(capacity=0)
