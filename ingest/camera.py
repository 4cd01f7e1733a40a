"""What the supervisor is told about a camera (`CameraSpec`) and what it reports back
(`CameraStatus`), plus the per-process knobs shared by all workers (`WorkerSettings`).

These are plain dataclasses so the composition root can build them from the SQL registry
and the config without ingest importing either. `CameraSpec.password` is hidden from `repr`
(STYLE counter-example: settings objects whose repr prints passwords).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from flashwatch.config import IngestConfig
from flashwatch.security import NetworkPolicy, camera_policy

# "disabled" is reported by the supervisor when a camera it was reading gets disabled.
CameraState = Literal["connecting", "online", "offline", "auth_failed", "error", "disabled"]


@dataclass(frozen=True)
class CameraSpec:
    """One camera as the registry describes it; a change of any field restarts its worker.

    `url` has no credentials (they are `username`/`password`). `file_start_time` anchors the
    timestamps of a `file://` source (UNIX seconds of the footage's first frame).
    `interval_s`/`levels` of None mean the config defaults.
    """

    id: int
    name: str
    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    interval_s: float | None = None
    levels: int | None = None
    enabled: bool = True
    file_start_time: float | None = None


@dataclass(frozen=True)
class CameraCounters:
    frames: int = 0
    sampled: int = 0
    clips: int = 0
    decode_errors: int = 0
    reconnects: int = 0
    stalls: int = 0
    dropped: int = 0
    discarded_samples: int = 0


@dataclass(frozen=True)
class CameraStatus:
    """A snapshot of one worker: safe to show (last_error is redacted)."""

    camera_id: int
    state: CameraState
    epoch: int = 0
    last_error: str | None = None
    decode_mode: str = "all"
    keyframe_interval_s: float | None = None
    last_frame_time: float | None = None
    clips_per_level: tuple[int, ...] = ()
    counters: CameraCounters = field(default_factory=CameraCounters)

    def with_state(self, state: CameraState, last_error: str | None = None) -> CameraStatus:
        return replace(self, state=state, last_error=last_error)


@dataclass(frozen=True)
class WorkerSettings:
    """Ingest knobs shared by every worker of one process.

    `frame_size` is the encoder input S (224 or 448, reference §1.1); it is not in
    `IngestConfig` yet, so the composition root passes the encoder's value.
    `network_policy`, when set, is checked against every resolved camera address at each
    connect (None: no check, for tests that build workers by hand).
    """

    level0_interval_s: float = 1.0
    pyramid_levels: int = 3
    frame_size: int = 224
    jpeg_quality: int = 90
    thumb_width: int = 320
    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0
    stall_timeout_s: float = 10.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    stable_uptime_s: float = 60.0
    auth_retry_s: float = 300.0
    allow_file_sources: bool = False
    file_realtime: bool = False
    max_lag_s: float = 3.0
    reconnect_rate_per_s: float = 5.0
    reconnect_burst: int = 5
    network_policy: NetworkPolicy | None = None

    @classmethod
    def from_config(cls, cfg: IngestConfig, frame_size: int = 224) -> WorkerSettings:
        return cls(
            level0_interval_s=cfg.level0_interval_s,
            pyramid_levels=cfg.pyramid_levels,
            frame_size=frame_size,
            jpeg_quality=cfg.jpeg_quality,
            thumb_width=cfg.thumb_width,
            open_timeout_s=cfg.open_timeout_s,
            read_timeout_s=cfg.read_timeout_s,
            stall_timeout_s=cfg.stall_timeout_s,
            backoff_initial_s=cfg.backoff_initial_s,
            backoff_max_s=cfg.backoff_max_s,
            stable_uptime_s=cfg.stable_uptime_s,
            auth_retry_s=max(cfg.backoff_max_s, 60.0),
            allow_file_sources=cfg.allow_file_sources,
            file_realtime=cfg.file_realtime,
            network_policy=camera_policy(cfg),
        )
