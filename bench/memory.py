"""Memory store benchmark: writes, range reads and bytes per camera-hour, Redis and SQLite.

Prints one JSON object. One synthetic camera-hour at 1 frame/s: level k has 3600 / (4·4^k)
clips (900, 225, 56, 14, 3), level-0 clips carry a 320×180 JPEG thumbnail. For each backend and
token dtype it reports:

* clips/s written pipelined (`put_many` in batches) and one by one (`put`),
* range-read latency (median and p95 ms) of the whole hour at level 1 (225 clips) and level 0,
* bytes per camera-hour per level: stored payload (`stats()`), and for Redis the `MEMORY USAGE`
  of every key of that level plus the server's `used_memory` growth,
* for Redis, `MEMORY USAGE` of one level-0 clip including its thumbnail.

Issue 5 targets: ≥ 2,000 clip writes/s, one level-1 camera-hour read in ≤ 50 ms, ≤ 80 KiB per
level-0 int8 clip with thumbnail, ≤ 96 MiB per camera-hour over all levels.

    python bench/memory.py                      # private redis-server + temp SQLite
    python bench/memory.py --redis-url redis://127.0.0.1:6379/14 --dtypes int8
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flashwatch.messages import ClipTokens
from memory.codec import encode_tokens
from memory.redis_store import RedisStore
from memory.sqlite_store import SqliteStore
from memory.testing import RedisServer, postln_features

CAMERA = 1
T_START = 1_700_000_000.0
LEVELS = 5


def jpeg_thumb(width: int = 320, height: int = 180) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([xx * 255 / width, yy * 255 / height, (xx + yy) % 256], axis=-1)
    img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def camera_hour(dtype: str, thumb: bytes) -> dict[int, list[ClipTokens]]:
    """One hour of one camera at every pyramid level (frame stride 4^k s, 4 frames a clip)."""
    rng = np.random.default_rng(0)
    pool = [postln_features(rng) for _ in range(16)]  # features do not change the cost
    out: dict[int, list[ClipTokens]] = {}
    for level in range(LEVELS):
        stride = 4.0**level
        clip_s = 4 * stride
        clips = []
        for i in range(int(3600 // clip_s)):
            t0 = T_START + i * clip_s
            clips.append(
                encode_tokens(
                    pool[i % len(pool)],
                    dtype,  # type: ignore[arg-type]
                    camera_id=CAMERA,
                    level=level,
                    epoch=0,
                    t=tuple(t0 + j * stride for j in range(4)),
                    thumb=thumb if level == 0 else None,
                )
            )
        out[level] = clips
    return out


def timed_reads(fn: Any, n: int) -> dict[str, float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 2),
        "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2),
    }


def redis_level_usage(store: RedisStore, namespace: str) -> dict[int, int]:
    client = store.raw_client()
    usage: dict[int, int] = {}
    for key in client.scan_iter(match=f"{namespace}:{{{CAMERA}}}:*", count=1000):
        parts = key.decode().split(":")
        if parts[2].isdigit():
            level = int(parts[2])
            usage[level] = usage.get(level, 0) + int(client.memory_usage(key, samples=0))
    return usage


def bench_backend(
    store: Any, clips: dict[int, list[ClipTokens]], batch: int, reads: int
) -> dict[str, Any]:
    all_clips = [c for level in sorted(clips) for c in clips[level]]
    t = time.perf_counter()
    for i in range(0, len(all_clips), batch):
        store.put_many(all_clips[i : i + batch])
    pipelined = len(all_clips) / (time.perf_counter() - t)
    single = [msgspec.structs.replace(ct, camera_id=CAMERA + 1) for ct in clips[0][:200]]
    t = time.perf_counter()
    for ct in single:  # fresh keys of another camera, one round trip / commit each
        store.put(ct)
    one_by_one = len(single) / (time.perf_counter() - t)
    store.delete_camera(CAMERA + 1)
    hour = (T_START, T_START + 3600)
    assert len(store.range(CAMERA, 1, *hour)) == len(clips[1])
    stats = store.stats()
    return {
        "clips": len(all_clips),
        "writes_per_s_pipelined": round(pipelined),
        "writes_per_s_single": round(one_by_one),
        "read_level1_hour": timed_reads(lambda: store.range(CAMERA, 1, *hour), reads),
        "read_level0_hour": timed_reads(lambda: store.range(CAMERA, 0, *hour), max(3, reads // 4)),
        "payload_bytes_per_camera_hour": {
            str(level): round(s.bytes_per_camera_hour or s.bytes)
            for level, s in stats.levels.items()
        },
        "payload_bytes_total": stats.bytes,
    }


def run_redis(
    url: str, dtype: str, clips: dict[int, list[ClipTokens]], args: Any
) -> dict[str, Any]:
    namespace = f"fwbench{uuid.uuid4().hex[:6]}"
    store = RedisStore(url, [1e4], namespace=namespace)
    client = store.raw_client()
    before = int(client.info("memory")["used_memory"])
    try:
        out = bench_backend(store, clips, args.batch, args.reads)
        out["used_memory_growth_bytes"] = int(client.info("memory")["used_memory"]) - before
        usage = redis_level_usage(store, namespace)
        out["memory_usage_bytes_per_camera_hour"] = {str(k): v for k, v in sorted(usage.items())}
        out["memory_usage_per_camera_hour_MiB"] = round(sum(usage.values()) / 2**20, 2)
        t0 = int(clips[0][0].t[0] * 1000)
        keys = client.keys(f"{namespace}:{{{CAMERA}}}:0:*:{t0}*")
        per_clip = sum(int(client.memory_usage(k, samples=0)) for k in keys)
        out["memory_usage_level0_clip_with_thumb_bytes"] = per_clip
    finally:
        store.delete_camera(CAMERA)
        store.close()
    return out


def run_sqlite(dtype: str, clips: dict[int, list[ClipTokens]], args: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fw-bench-") as tmp:
        path = Path(tmp) / "memory.sqlite3"
        store = SqliteStore(path, [1e4])
        out = bench_backend(store, clips, args.batch, args.reads)
        db = store._conn()
        pages, free, page_size = (
            db.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("page_count", "freelist_count", "page_size")
        )
        store.close()
        out["file_bytes_used_per_camera_hour"] = (pages - free) * page_size
        out["file_bytes_on_disk"] = sum(p.stat().st_size for p in Path(tmp).iterdir())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--redis-url", help="use this Redis instead of a private redis-server")
    ap.add_argument("--backends", default="redis,sqlite")
    ap.add_argument("--dtypes", default="int8,fp16")
    ap.add_argument("--batch", type=int, default=32, help="clips per put_many")
    ap.add_argument("--reads", type=int, default=20, help="repetitions of each range read")
    args = ap.parse_args()
    thumb = jpeg_thumb()
    server = None
    url = args.redis_url
    if "redis" in args.backends and url is None:
        server = RedisServer().start()
        url = server.url
    result: dict[str, Any] = {
        "thumb_bytes": len(thumb),
        "redis_parser": "hiredis" if importlib.util.find_spec("hiredis") else "python",
        "results": {},
    }
    try:
        for dtype in args.dtypes.split(","):
            clips = camera_hour(dtype, thumb)
            result["clips_per_level"] = {str(k): len(v) for k, v in clips.items()}
            if "redis" in args.backends:
                result["results"][f"redis/{dtype}"] = run_redis(url, dtype, clips, args)
            if "sqlite" in args.backends:
                result["results"][f"sqlite/{dtype}"] = run_sqlite(dtype, clips, args)
    finally:
        if server is not None:
            server.cleanup()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
