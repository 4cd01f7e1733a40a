"""The acceptance ledger: produced / acked / dropped clip ids, from publish and bus hooks."""

from __future__ import annotations

import json
from pathlib import Path

from flashwatch.bus import InProcessBus
from flashwatch.messages import Clip, encode
from ingest import clip_publisher
from ingest.ledger import Ledger, clip_id_of


def clip(i: int) -> Clip:
    t0 = 1_700_000_000.0 + 4 * i
    return Clip(camera_id=2, level=1, epoch=1, t=(t0, t0 + 1, t0 + 2, t0 + 3), frames=[b"x"] * 4)


def test_clip_id_of_reads_only_the_head() -> None:
    assert clip_id_of(encode(clip(3))) == (2, 1, round((1_700_000_000.0 + 12) * 1000))
    assert clip_id_of(b"\x00garbage") is None


def test_ledger_records_produced_acked_and_dropped(tmp_path: Path) -> None:
    ledger = Ledger(path=tmp_path / "ledger.jsonl")
    bus = InProcessBus()
    publish = ledger.wrap(clip_publisher(bus, "fw.clips"))
    for i in range(3):
        publish(clip(i))
    ledger.delivery("fw.clips", b"2", encode(clip(0)), ok=True)
    ledger.delivery("fw.clips", b"2", encode(clip(0)), ok=True)  # a retried duplicate
    ledger.delivery("fw.clips", b"2", encode(clip(1)), ok=False)
    ledger.delivery("fw.dead-letter", None, b"not a clip", ok=True)
    ledger.close()
    ids = [c.clip_id for c in map(clip, range(3))]
    assert ledger.produced == dict.fromkeys(ids, 1)
    assert ledger.acked == {ids[0]: 2}
    assert ledger.dropped == {ids[1]: 1}
    assert ledger.unacked() == {ids[1], ids[2]}
    lines = [json.loads(x) for x in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    assert [x["event"] for x in lines].count("produced") == 3 and len(lines) == 6


def test_in_process_publish_return_is_the_ack() -> None:
    ledger = Ledger()
    publish = ledger.wrap(clip_publisher(InProcessBus(), "t"), acked_on_return=True)
    publish(clip(0))
    assert ledger.unacked() == set() and len(ledger.acked) == 1
