"""Typed messages between components (DESIGN.md §3), encoded with msgpack, never pickle.

Every message carries `schema` (the wire version). `decode` first reads only the version,
so a payload from a newer or older producer is refused with `UnknownSchemaError` instead
of being half-understood; truncated or malformed bytes raise `MalformedMessageError`.
Both subclass `MessageError`, which the bus consumers route to the dead-letter topic.

Clip ids are deterministic, `(camera_id, level, t[0] in ms)`, so every downstream write
is an idempotent upsert and at-least-once delivery never duplicates memory.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import msgspec

SCHEMA_VERSION = 1
CLIP_FRAMES = 4
TOKENS_PER_CLIP = 64

NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
Level = Annotated[int, msgspec.Meta(ge=0, le=15)]
Timestamp = Annotated[float, msgspec.Meta(ge=0)]
Probability = Annotated[float, msgspec.Meta(ge=0, le=1)]


class MessageError(ValueError):
    """A payload that cannot be turned into a message."""


class UnknownSchemaError(MessageError):
    """The payload's schema version is not one this build understands."""


class MalformedMessageError(MessageError):
    """The payload is truncated, not msgpack, or does not match the message type."""


class _Message(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    schema: int = SCHEMA_VERSION


class Clip(_Message, kw_only=True):
    """Four sampled frames of one camera at one pyramid level, ready for the encoder.

    `frames` are JPEGs already resized to the encoder input S×S (RGB); `thumb` is a small
    JPEG of one frame at the original aspect (level 0 only).
    """

    camera_id: NonNegInt
    level: Level
    epoch: NonNegInt
    t: tuple[Timestamp, Timestamp, Timestamp, Timestamp]
    frames: list[bytes]
    thumb: bytes | None = None

    @property
    def clip_id(self) -> tuple[int, int, int]:
        return clip_key(self.camera_id, self.level, self.t[0])


class ClipTokens(_Message, kw_only=True):
    """The 64 merged UMT tokens of one clip (post-ToMe, pre-projector).

    `tokens` holds `shape[0] * shape[1]` values in `dtype`, row-major. For `int8` the
    per-token scales are in `scales` (fp16, one per row): value = int8 * scale.
    """

    camera_id: NonNegInt
    level: Level
    epoch: NonNegInt
    t: tuple[Timestamp, Timestamp, Timestamp, Timestamp]
    dtype: Literal["fp16", "int8", "fp32"]
    shape: tuple[int, int] = (TOKENS_PER_CLIP, 1024)
    tokens: bytes
    scales: bytes | None = None
    thumb: bytes | None = None

    @property
    def clip_id(self) -> tuple[int, int, int]:
        return clip_key(self.camera_id, self.level, self.t[0])


class AlertEvent(_Message, kw_only=True):
    """An alert that fired (or a report answer), as sent to sinks and the event topic."""

    alert_id: NonNegInt
    dedup_key: str
    rule_id: NonNegInt
    rule_name: str
    camera_id: NonNegInt
    camera_name: str
    kind: Literal["alert", "report"] = "alert"
    severity: Literal["info", "low", "medium", "high", "critical"] = "medium"
    window_start: Timestamp
    window_end: Timestamp
    score: Probability
    reason: str = ""
    evidence: list[Timestamp] = msgspec.field(default_factory=list)
    backfilled: bool = False
    created_at: Timestamp


class CameraWindow(msgspec.Struct, kw_only=True):
    """A camera and a closed time range [t_from, t_to] in UNIX seconds."""

    camera_id: NonNegInt
    camera_name: str = ""
    t_from: Timestamp
    t_to: Timestamp


class QueryRequest(_Message, kw_only=True):
    """A free-text question over one or more cameras' memory."""

    question: Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]
    windows: list[CameraWindow]
    strategy: Literal["auto", "pyramid", "zoom", "sparse"] = "auto"
    max_new_tokens: Annotated[int, msgspec.Meta(ge=1, le=2048)] = 128


class AnswerTime(msgspec.Struct, kw_only=True):
    """A time the answer mentions ("at 42 seconds"): its text, the offset the model meant (s
    from the start of the video it saw) and the wall-clock time that offset maps to."""

    text: str
    offset_s: float
    t: Timestamp
    camera_id: NonNegInt = 0


class EvidenceClip(msgspec.Struct, kw_only=True):
    """A clip the model attended to most (start time; fetch its thumbnail from memory)."""

    camera_id: NonNegInt
    level: Level = 0
    t: Timestamp
    weight: float = 0.0  # share of the text-guided attention the clip received


class QueryAnswer(_Message, kw_only=True):
    answer: str
    evidence: list[Timestamp] = msgspec.field(default_factory=list)
    level: Level = 0
    frames: NonNegInt = 0
    latency_s: float = 0.0
    # Optional detail (reasoner issue 6); all default to empty so older producers decode.
    strategy: str = ""  # pyramid | zoom | sparse
    duration_s: float = 0.0  # duration stated in the timestamp sentence (first camera)
    times: list[AnswerTime] = msgspec.field(default_factory=list)
    evidence_clips: list[EvidenceClip] = msgspec.field(default_factory=list)
    timings: dict[str, float] = msgspec.field(default_factory=dict)  # plan/fetch/prefill/...
    tokens_visual: NonNegInt = 0  # visual tokens in the prompt
    tokens_kept: NonNegInt = 0  # visual tokens left after the last drop stage
    scan_windows: NonNegInt = 0  # zoom: windows scored for relevance
    scan_frames: NonNegInt = 0  # zoom: frames read by the relevance scan


class RuleQuestion(msgspec.Struct, kw_only=True):
    rule_id: NonNegInt
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    mode: Literal["alert", "report"] = "alert"


class ScoreRequest(_Message, kw_only=True):
    """All rules due on one camera window, scored in one reasoner call (shared prefix)."""

    window: CameraWindow
    rules: list[RuleQuestion]
    explain: bool = False


class RuleScore(msgspec.Struct, kw_only=True):
    rule_id: NonNegInt
    p_yes: Probability
    answer: str = ""
    evidence: list[Timestamp] = msgspec.field(default_factory=list)  # most-attended clip starts


class ScoreAnswer(_Message, kw_only=True):
    scores: list[RuleScore]
    frames: NonNegInt = 0
    latency_s: float = 0.0
    timings: dict[str, float] = msgspec.field(default_factory=dict)  # fetch/project/score/...
    tokens_visual: NonNegInt = 0


def clip_key(camera_id: int, level: int, t0: float) -> tuple[int, int, int]:
    """The deterministic id of a clip: camera, level and first-frame time in ms."""
    return (camera_id, level, round(t0 * 1000))


class _Header(msgspec.Struct, forbid_unknown_fields=False):
    schema: int = 0


M = TypeVar("M", bound=_Message)

_encoder = msgspec.msgpack.Encoder()
_header_decoder = msgspec.msgpack.Decoder(_Header)
_decoders: dict[type[Any], msgspec.msgpack.Decoder[Any]] = {}


def encode(message: _Message) -> bytes:
    """Serialise a message to msgpack bytes."""
    return _encoder.encode(message)


def decode(payload: bytes, kind: type[M]) -> M:
    """Parse bytes into `kind`, refusing other schema versions and malformed payloads."""
    try:
        header = _header_decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise MalformedMessageError(f"{kind.__name__}: {exc}") from None
    if header.schema != SCHEMA_VERSION:
        raise UnknownSchemaError(
            f"{kind.__name__}: schema version {header.schema} is not supported "
            f"(this build reads version {SCHEMA_VERSION})"
        )
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.msgpack.Decoder(kind)
    try:
        result: M = decoder.decode(payload)
        return result
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MalformedMessageError(f"{kind.__name__}: {exc}") from None


__all__ = [
    "CLIP_FRAMES",
    "SCHEMA_VERSION",
    "TOKENS_PER_CLIP",
    "AlertEvent",
    "AnswerTime",
    "CameraWindow",
    "Clip",
    "ClipTokens",
    "EvidenceClip",
    "MalformedMessageError",
    "MessageError",
    "QueryAnswer",
    "QueryRequest",
    "RuleQuestion",
    "RuleScore",
    "ScoreAnswer",
    "ScoreRequest",
    "UnknownSchemaError",
    "clip_key",
    "decode",
    "encode",
]
