"""Messages: round trips, deterministic ids, typed refusals of bad payloads."""

from __future__ import annotations

import msgspec
import pytest

from flashwatch.messages import (
    AlertEvent,
    CameraWindow,
    Clip,
    ClipTokens,
    MalformedMessageError,
    QueryAnswer,
    QueryRequest,
    RuleQuestion,
    RuleScore,
    ScoreAnswer,
    ScoreRequest,
    UnknownSchemaError,
    decode,
    encode,
)

T = (1700000000.25, 1700000001.25, 1700000002.25, 1700000003.25)
SAMPLES = [
    Clip(camera_id=3, level=1, epoch=2, t=T, frames=[b"\xff\xd8a"] * 4, thumb=b"t"),
    ClipTokens(camera_id=3, level=0, epoch=0, t=T, dtype="int8", tokens=b"\x01" * 64, scales=b"s"),
    AlertEvent(
        alert_id=1,
        dedup_key="1:3:1700000000000",
        rule_id=1,
        rule_name="fence",
        camera_id=3,
        camera_name="gate",
        window_start=T[0],
        window_end=T[3],
        score=0.9,
        created_at=T[3],
    ),
    QueryRequest(question="who?", windows=[CameraWindow(camera_id=3, t_from=T[0], t_to=T[3])]),
    QueryAnswer(answer="a person", evidence=[T[1]], level=0, frames=4),
    ScoreRequest(
        window=CameraWindow(camera_id=3, t_from=T[0], t_to=T[3]),
        rules=[RuleQuestion(rule_id=1, text="a person climbs the fence")],
    ),
    ScoreAnswer(scores=[RuleScore(rule_id=1, p_yes=0.7)]),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: msgspec.Struct) -> None:
    assert decode(encode(msg), type(msg)) == msg  # type: ignore[arg-type]


def test_clip_id_is_deterministic_ms_key() -> None:
    clip, tokens = SAMPLES[0], SAMPLES[1]
    assert clip.clip_id == (3, 1, 1700000000250)  # type: ignore[attr-defined]
    assert tokens.clip_id == (3, 0, 1700000000250)  # type: ignore[attr-defined]


@pytest.mark.parametrize("cut", [1, 5, 20, -1])
def test_truncated_payload_is_malformed(cut: int) -> None:
    payload = encode(SAMPLES[0])
    with pytest.raises(MalformedMessageError, match="Clip"):
        decode(payload[:cut], Clip)


def test_unknown_schema_version_is_refused_before_fields_are_read() -> None:
    newer = msgspec.msgpack.encode({"schema": 2, "camera_id": "not even an int"})
    with pytest.raises(UnknownSchemaError, match="schema version 2 is not supported"):
        decode(newer, Clip)
    missing = msgspec.msgpack.encode({"camera_id": 1})
    with pytest.raises(UnknownSchemaError, match="version 0"):
        decode(missing, Clip)


def test_wrong_type_and_bounds_are_malformed() -> None:
    with pytest.raises(MalformedMessageError, match="dtype"):
        decode(encode(SAMPLES[0]), ClipTokens)
    bad = msgspec.msgpack.encode(
        {"schema": 1, "camera_id": -1, "level": 0, "epoch": 0, "t": list(T), "frames": []}
    )
    with pytest.raises(MalformedMessageError, match="camera_id"):
        decode(bad, Clip)
    with pytest.raises(MalformedMessageError):
        decode(b"\xc1garbage", Clip)


def test_unknown_extra_fields_from_same_version_are_tolerated() -> None:
    """A same-version producer adding an optional field must not break older consumers."""
    raw = msgspec.msgpack.decode(encode(SAMPLES[0]))
    raw["future_field"] = 1
    assert decode(msgspec.msgpack.encode(raw), Clip) == SAMPLES[0]
