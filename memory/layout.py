"""Redis key layout and value format of one clip (pure: no I/O, unit-tested on its own).

Keys (the camera id is the hash tag, so Redis Cluster keeps a camera on one shard and every
multi-key command or MULTI/EXEC of one camera stays in one slot):

    fw:cameras                       set of camera ids that hold data (the only global key)
    fw:{cam}:levels                  set of levels the camera has written
    fw:{cam}:<lvl>:idx               sorted set, score = clip start in ms, member = entry name
    fw:{cam}:<lvl>:c:<t0ms>[:<i>]    value chunk i (chunk 0 has no suffix)
    fw:{cam}:<lvl>:th:<t0ms>         thumbnail JPEG (level-0 entries carry one)
    fw:{cam}:<lvl>:new               stream: one entry per write, for `wait_new` (capped)

(`fw` is the default namespace; tests and shared servers pass their own.)

An entry name is `b"<t0ms>:<chunks>:<payload bytes>:<thumb bytes>"`: a range read learns from
the index alone which keys to MGET (one round trip for the index, one for the values), and
`stats` sums sizes from the index without touching a value.

Value = 72-byte header + scales + tokens, cut into chunks of at most `CHUNK_BYTES`. Redis'
allocator (jemalloc) rounds a string of exactly 64 KiB (plus its few bytes of sds header) up to
the 80 KiB size class, i.e. 1.25×, while 64 KiB − 64 B fits the 64 KiB class: so an int8 clip
(64 KiB + 200 B) is one 64 KiB − 64 B chunk plus a 264 B tail, and an fp16 clip two full chunks
plus a tail. Measured with `MEMORY USAGE` (Redis 7.0, jemalloc 5.3): a 65,536 B string costs
81,968 B, a 65,472 B one 65,584 B; one int8 level-0 clip with a 13.4 KB thumbnail costs
80,456 B in all (chunks 66,000 + thumbnail 14,408 + index member), an fp16 one 145,984 B.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from flashwatch.messages import ClipTokens
from memory.codec import StoredDtype

__all__ = [
    "CHUNK_BYTES",
    "HEADER",
    "MAX_CHUNKS",
    "Entry",
    "Keys",
    "complete",
    "entry_name",
    "pack",
    "parse_entry",
    "split_chunks",
    "unpack",
    "unpack_chunks",
]

CHUNK_BYTES = 64 * 1024 - 64
_MAGIC = b"FWc1"
_DTYPES: tuple[StoredDtype, ...] = ("fp16", "int8", "fp32")
# magic, dtype code, level, flags(unused), camera, epoch, t0..t3, rows, cols, tokens, scales
HEADER = struct.Struct("<4sBBxxQQ4dIIII")
MAX_CHUNKS = 8  # fp32 64×1024 needs 5; stale chunks beyond a rewrite's count are deleted


@dataclass(frozen=True)
class Keys:
    """Key names under a namespace (default `fw`; tests and shared servers use their own)."""

    namespace: str = "fw"

    def cameras(self) -> str:
        return f"{self.namespace}:cameras"

    def camera_prefix(self, camera_id: int) -> str:
        return f"{self.namespace}:{{{camera_id}}}:"

    def levels(self, camera_id: int) -> str:
        return f"{self.camera_prefix(camera_id)}levels"

    def index(self, camera_id: int, level: int) -> str:
        return f"{self.camera_prefix(camera_id)}{level}:idx"

    def stream(self, camera_id: int, level: int) -> str:
        return f"{self.camera_prefix(camera_id)}{level}:new"

    def chunk(self, camera_id: int, level: int, t0_ms: int, i: int) -> str:
        base = f"{self.camera_prefix(camera_id)}{level}:c:{t0_ms}"
        return base if i == 0 else f"{base}:{i}"

    def chunks(self, camera_id: int, level: int, t0_ms: int, n: int) -> list[str]:
        return [self.chunk(camera_id, level, t0_ms, i) for i in range(n)]

    def thumb(self, camera_id: int, level: int, t0_ms: int) -> str:
        return f"{self.camera_prefix(camera_id)}{level}:th:{t0_ms}"


@dataclass(frozen=True)
class Entry:
    """One index member, parsed."""

    t0_ms: int
    chunks: int
    payload_bytes: int
    thumb_bytes: int


def entry_name(t0_ms: int, chunks: int, payload_bytes: int, thumb_bytes: int) -> bytes:
    return b"%d:%d:%d:%d" % (t0_ms, chunks, payload_bytes, thumb_bytes)


def parse_entry(member: bytes | str) -> Entry:
    raw = member.decode() if isinstance(member, bytes) else member
    t0, chunks, payload, thumb = (int(v) for v in raw.split(":"))
    return Entry(t0, chunks, payload, thumb)


def pack(ct: ClipTokens) -> bytes:
    """Header + scales + tokens of a clip (the thumbnail is stored in its own key)."""
    scales = ct.scales or b""
    header = HEADER.pack(
        _MAGIC,
        _DTYPES.index(ct.dtype),
        ct.level,
        ct.camera_id,
        ct.epoch,
        *ct.t,
        ct.shape[0],
        ct.shape[1],
        len(ct.tokens),
        len(scales),
    )
    return header + scales + ct.tokens


def unpack(payload: bytes, thumb: bytes | None = None) -> ClipTokens:
    return unpack_chunks([payload], thumb)


def unpack_chunks(chunks: Sequence[bytes], thumb: bytes | None = None) -> ClipTokens:
    """Rebuild a clip from its chunks, copying the token bytes once (reads are copy-bound)."""
    first = chunks[0]
    if len(first) < HEADER.size or first[:4] != _MAGIC:
        raise ValueError("not a FlashWatch clip value (bad magic or truncated header)")
    _, dtype, level, camera, epoch, t0, t1, t2, t3, rows, cols, ntok, nsc = HEADER.unpack_from(
        first
    )
    total = sum(len(c) for c in chunks)
    if HEADER.size + nsc + ntok != total:
        raise ValueError(f"clip value is {total} bytes, header says {HEADER.size + nsc + ntok}")
    start = HEADER.size + nsc
    if start > len(first):  # scales spill past chunk 0 (only for absurd token counts)
        return unpack_chunks([b"".join(chunks)], thumb)
    tokens = b"".join([memoryview(first)[start:], *chunks[1:]])
    return ClipTokens(
        camera_id=camera,
        level=level,
        epoch=epoch,
        t=(t0, t1, t2, t3),
        dtype=_DTYPES[dtype],
        shape=(rows, cols),
        tokens=tokens,
        scales=first[HEADER.size : start] if nsc else None,
        thumb=thumb,
    )


def split_chunks(payload: bytes, size: int = CHUNK_BYTES) -> list[bytes]:
    chunks = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
    if len(chunks) > MAX_CHUNKS:
        raise ValueError(f"clip value of {len(payload)} bytes needs more than {MAX_CHUNKS} chunks")
    return chunks


def complete(chunks: Sequence[bytes | None]) -> list[bytes] | None:
    """The chunks if all are present; None for a torn or concurrently deleted entry."""
    if any(c is None for c in chunks):
        return None
    return [c for c in chunks if c is not None]
