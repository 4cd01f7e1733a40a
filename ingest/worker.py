"""One supervised thread per camera: connect, sample, assemble clips, publish, reconnect.

The loop (Frigate's camera-maintainer pattern, STYLE §7):
    wait for a reconnect slot (shared token bucket) -> connecting -> open (bounded)
    -> online at the first frame -> frames until the stream fails, stalls or ends
    -> offline / auth_failed / error with the redacted reason -> capped jittered backoff.
Every connection is a new `epoch`: the wall-clock anchor, the samplers and the partial clips
are reset, so no clip spans a disconnect (ACCEPTANCE I2).

Publishing never blocks the reader (I7): `publish` is expected to be non-blocking (the
in-process bus drops oldest; `KafkaBus` buffers locally); a publish that raises is counted
in `dropped`. When decoding falls behind the camera by more than `max_lag_s` the reader
skips non-key frames until it has caught up, counting what it skipped as dropped.

File sources (`file://`, only when allowed) are read once, timestamped from
`CameraSpec.file_start_time`, and the worker ends at EOF with state `offline`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from flashwatch.messages import Clip
from flashwatch.security import SECRETS, CameraUrl, safe_error
from ingest.backoff import Backoff, ReconnectStagger
from ingest.camera import CameraCounters, CameraSpec, CameraState, CameraStatus, WorkerSettings
from ingest.imaging import encoder_jpeg, thumbnail_jpeg
from ingest.reader import (
    AuthError,
    ReaderError,
    StallError,
    StreamEnded,
    StreamReader,
    check_destination,
)
from ingest.sampling import Pyramid, WallClock, choose_decode_mode

log = logging.getLogger(__name__)

PublishFn = Callable[[Clip], None]
StatusFn = Callable[[int, CameraStatus], None]


class CameraWorker:
    """Reads one camera on its own daemon thread until `stop()`."""

    def __init__(
        self,
        spec: CameraSpec,
        settings: WorkerSettings,
        publish: PublishFn,
        on_status: StatusFn | None = None,
        stagger: ReconnectStagger | None = None,
        backoff: Backoff | None = None,
        wall_time: Callable[[], float] = time.time,
        first_epoch: int = 1,
        reader_factory: Callable[..., StreamReader] = StreamReader,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self._publish = publish
        self._on_status = on_status
        self._stagger = stagger or ReconnectStagger(1e6, 1_000_000)
        self._backoff = backoff or Backoff(
            settings.backoff_initial_s, settings.backoff_max_s, settings.stable_uptime_s
        )
        self._wall_time = wall_time
        self._first_epoch = max(1, first_epoch)
        self._reader_factory = reader_factory
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.is_file = spec.url.startswith("file:")
        self.s0 = spec.interval_s or settings.level0_interval_s
        self.n_levels = spec.levels or settings.pyramid_levels
        self._counts: dict[str, int] = dict.fromkeys(CameraCounters.__dataclass_fields__, 0)
        self._clips_per_level = [0] * self.n_levels
        self._status = CameraStatus(camera_id=spec.id, state="connecting")
        self._pyramid = Pyramid(spec.id, self.s0, self.n_levels)
        self._clock = WallClock(max_drift_s=None if self.is_file else 30.0)
        self._reader: StreamReader | None = None
        self.last_progress = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"ingest-cam-{spec.id}", daemon=True)

    # ---- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end; it does at the next frame or when the current bounded
        open/read returns."""
        self._stop.set()

    def mute(self) -> None:
        """Stop reporting status: a retired worker finishing its last bounded read must not
        overwrite the state its replacement reports."""
        self._on_status = None

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def backoff_attempt(self) -> int:
        """Consecutive failed connections since the last stable one (I3 evidence)."""
        return self._backoff.attempt

    def status(self) -> CameraStatus:
        with self._lock:
            counts = dict(self._counts)
            reader = self._reader
            if reader is not None:  # the live connection's counts, not yet absorbed
                counts["decode_errors"] += reader.decode_errors
                counts["dropped"] += reader.skipped
            return replace(
                self._status,
                counters=CameraCounters(**counts),
                clips_per_level=tuple(self._clips_per_level),
            )

    # ---- the loop -------------------------------------------------------------------

    def _run(self) -> None:
        if self.is_file and not self.settings.allow_file_sources:
            self._set(state="error", last_error="file sources are disabled (allow_file_sources)")
            return
        epoch = self._first_epoch - 1
        try:
            while not self._stop.is_set():
                wait = self._stagger.reserve(time.monotonic())
                if self._stop.wait(wait):
                    break
                epoch += 1
                if epoch > self._first_epoch:
                    self._count("reconnects")
                self._set(state="connecting", epoch=epoch)
                delay = self._connect_once(epoch)
                if delay is None or self._stop.wait(delay):
                    break
        except Exception as exc:  # a bug must not kill the thread silently
            log.error("camera %s: worker crashed: %s", self.spec.id, safe_error(exc))
            log.debug("camera %s: traceback", self.spec.id, exc_info=True)
            self._set(state="error", last_error=safe_error(exc))
            return
        if self._status.state in ("connecting", "online"):
            self._set(state="offline", last_error="ingest stopped")

    def _connect_once(self, epoch: int) -> float | None:
        """One connection; returns the delay before the next one, or None to end."""
        reader = self._reader_factory(
            self._source_url(),
            open_timeout_s=self.settings.open_timeout_s,
            read_timeout_s=self.settings.read_timeout_s,
            stall_timeout_s=self.settings.stall_timeout_s,
        )
        state: CameraState = "offline"
        with self._lock:
            self._reader = reader
        try:
            if self.settings.network_policy is not None:
                check_destination(self.spec.url, self.settings.network_policy)
            reader.open()
            self._stream(reader, epoch)
            return None  # stopped
        except StreamEnded as exc:
            if self.is_file:
                self._set(state="offline", last_error="end of file")
                return None
            error = str(exc)
        except AuthError as exc:
            self._backoff.disconnected(time.monotonic())
            self._set(state="auth_failed", last_error=str(exc))
            return self.settings.auth_retry_s
        except StallError as exc:
            self._count("stalls")
            error = str(exc)
        except ReaderError as exc:
            error = str(exc)
        except Exception as exc:
            # Redacted text at error level; the traceback only at debug (FFmpeg texts hold URLs).
            log.error("camera %s: unexpected reader failure: %s", self.spec.id, safe_error(exc))
            log.debug("camera %s: traceback", self.spec.id, exc_info=True)
            error, state = safe_error(exc), "error"
        finally:
            self._absorb_reader(reader)
            reader.close()
            self._pyramid.reset()
        self._backoff.disconnected(time.monotonic())
        if self.is_file:  # a broken file will not mend itself: no retry loop
            state = "error"
        self._set(state=state, last_error=error)
        log.info("camera %s: %s (epoch %d): %s", self.spec.id, state, epoch, error)
        return None if self.is_file else self._backoff.next_delay()

    def _source_url(self) -> str:
        if self.is_file:
            return self.spec.url
        if self.spec.password:
            SECRETS.register(self.spec.password)
        return CameraUrl(self.spec.url, self.spec.username, self.spec.password).with_credentials()

    def _stream(self, reader: StreamReader, epoch: int) -> None:
        """Frames of one connection through the samplers into clips."""
        clock = self._clock
        clock.fps = reader.fps
        clock.new_epoch()
        self._pyramid.new_epoch(epoch)
        file_anchor = self.spec.file_start_time if self.is_file else None
        if self.is_file and file_anchor is None:
            file_anchor = self._wall_time()
        first_pts: float | None = None
        started = time.monotonic()
        online = False
        for raw in reader.frames_iter():
            if self._stop.is_set():
                return
            now_mono = time.monotonic()
            self.last_progress = now_mono
            arrival = self._wall_time()
            if self.is_file and self.settings.file_realtime and raw.pts_time is not None:
                first_pts = raw.pts_time if first_pts is None else first_pts
                ahead = (raw.pts_time - first_pts) - (now_mono - started)
                if ahead > 0 and self._stop.wait(ahead):
                    return
            t = clock.map(raw.pts_time, arrival, anchor_wall=file_anchor)
            if not online:
                online = True
                self._backoff.connected(now_mono)
                self._set(state="online", last_error=None)
            self._count("frames")
            self._update_mode(reader, lag=None if self.is_file else arrival - t)
            levels = self._pyramid.sample(t)
            if levels:
                self._emit(raw.frame, t, levels)
            with self._lock:
                self._status = replace(self._status, last_frame_time=t)

    def _emit(self, frame: Any, t: float, levels: list[int]) -> None:
        rgb = frame.to_ndarray(format="rgb24")  # only sampled frames pay for conversion
        jpeg = encoder_jpeg(rgb, self.settings.frame_size, self.settings.jpeg_quality)
        self._count("sampled")
        thumb = None
        if self._pyramid.needs_thumb(levels):
            thumb = thumbnail_jpeg(rgb, self.settings.thumb_width)
        for clip in self._pyramid.add(t, levels, jpeg, thumb):
            try:
                self._publish(clip)
            except Exception as exc:
                self._count("dropped")
                log.warning("camera %s: clip dropped: %s", self.spec.id, safe_error(exc))
                continue
            self._count("clips")
            with self._lock:
                self._clips_per_level[clip.level] += 1

    def _update_mode(self, reader: StreamReader, lag: float | None) -> None:
        mode = choose_decode_mode(self.s0, reader.gop.interval())
        catching_up = reader.catching_up
        if lag is not None:
            if lag > self.settings.max_lag_s:
                catching_up = True
            elif lag < self.settings.max_lag_s / 4:
                catching_up = False
        reader.set_mode(mode, catching_up)
        if mode != self._status.decode_mode:
            self._set(decode_mode=mode, keyframe_interval_s=reader.gop.interval())

    def _absorb_reader(self, reader: StreamReader) -> None:
        with self._lock:
            self._reader = None
            self._counts["decode_errors"] += reader.decode_errors
            self._counts["dropped"] += reader.skipped
            self._counts["discarded_samples"] = self._pyramid.discarded

    # ---- status ---------------------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _set(self, **changes: Any) -> None:
        with self._lock:
            before = self._status
            self._status = replace(before, **changes)
            changed = (before.state, before.last_error, before.epoch, before.decode_mode) != (
                self._status.state,
                self._status.last_error,
                self._status.epoch,
                self._status.decode_mode,
            )
        on_status = self._on_status
        if changed and on_status is not None:
            try:
                on_status(self.spec.id, self.status())
            except Exception as exc:
                log.warning("camera %s: on_status failed: %s", self.spec.id, safe_error(exc))
