"""One connection to one camera with PyAV: open, demux, decode, with every wait bounded.

Bounds (ACCEPTANCE I1, I2): FFmpeg's own `timeout` option (µs) bounds each socket operation
inside the RTSP demuxer, and PyAV's `timeout=(open, read)` interrupt callback bounds the
whole open and each read, so a server that accepts TCP and never answers fails the open in
about `open_timeout_s`, and one that goes silent mid-stream fails a read in about
`read_timeout_s`. Inside the demux loop a stall check raises `StallError` when packets keep
coming but no frame decodes for `stall_timeout_s` (a stream of garbage).

Safety (DESIGN §7): `protocol_whitelist` is set on every open (`rtsp,rtp,tcp,udp,tls` for
cameras, `file` for allowed file sources), so a DESCRIBE answer cannot redirect FFmpeg to
another protocol. FFmpeg error texts contain the URL, credentials included; every error
that leaves this module is rebuilt from `safe_error` text.

Decoding: packets are demuxed one at a time so their keyframe flags feed the GOP estimate
even when the decoder skips non-key frames; a packet that fails to decode is counted and
skipped (I5). The iterator ending on a live URL is a disconnect, reported as `StreamEnded`.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import av
import av.error

from flashwatch.security import NetworkPolicy, UrlPolicyError, check_address, safe_error
from ingest.sampling import DecodeMode, GopEstimator

log = logging.getLogger(__name__)

RTSP_PROTOCOLS = "rtsp,rtp,tcp,udp,tls"
FILE_PROTOCOLS = "file"


class ReaderError(Exception):
    """A connection failed or ended; the message is already redacted."""


class AuthError(ReaderError):
    """The camera refused our credentials (RTSP 401/403)."""


class OpenTimeout(ReaderError):
    """The camera did not complete the RTSP handshake in time."""


class StallError(ReaderError):
    """No frame decoded for longer than the stall timeout."""


class StreamEnded(ReaderError):
    """The frame iterator ended: a disconnect for a live camera, EOF for a file."""


@dataclass(frozen=True, slots=True)
class RawFrame:
    """A decoded frame and the metadata sampling needs."""

    pts_time: float | None
    key_frame: bool
    frame: av.VideoFrame


def open_options(url: str, read_timeout_s: float) -> dict[str, str]:
    """FFmpeg options for one open: transport, socket timeout, protocol whitelist."""
    if url.startswith("file:"):
        return {"protocol_whitelist": FILE_PROTOCOLS}
    return {
        "rtsp_transport": "tcp",
        "timeout": str(int(read_timeout_s * 1_000_000)),
        "protocol_whitelist": RTSP_PROTOCOLS,
    }


def check_destination(url: str, policy: NetworkPolicy) -> None:
    """Resolve the camera host now and refuse it if any address breaks `policy`.

    Registration validated the URL's text; this runs at every connect, so a DNS name that
    later resolves to loopback or a metadata address (rebinding) is still refused.
    Raises `ReaderError` (not retried any faster than other failures).
    """
    if url.startswith("file:"):
        return
    try:
        host = urlsplit(url).hostname
        port = urlsplit(url).port or 554
    except ValueError:
        raise ReaderError("camera URL cannot be parsed") from None
    if not host:
        raise ReaderError("camera URL has no host")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ReaderError(f"cannot resolve camera host: {safe_error(exc)}") from None
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        try:
            check_address(ip, policy, subject="camera address")
        except UrlPolicyError as exc:
            raise ReaderError(str(exc)) from None


def _classify(exc: BaseException, during_open: bool) -> ReaderError:
    text = safe_error(exc)
    if isinstance(exc, av.error.HTTPUnauthorizedError | av.error.HTTPForbiddenError):
        return AuthError(text)
    if during_open and isinstance(exc, av.error.InvalidDataError | av.error.TimeoutError):
        # The RTSP demuxer reports "nothing usable before the timeout" as invalid data.
        return OpenTimeout(text)
    if not during_open and isinstance(exc, av.error.ExitError | av.error.TimeoutError):
        # PyAV's interrupt callback fired: no data within the read timeout.
        return StallError(f"no data within the read timeout ({text})")
    return ReaderError(text)


class StreamReader:
    """One open container. Not thread-safe; owned by one worker thread."""

    def __init__(
        self,
        url: str,
        *,
        open_timeout_s: float,
        read_timeout_s: float,
        stall_timeout_s: float,
        clock: Any = time.monotonic,
    ) -> None:
        self._url = url  # may carry credentials: never log it, never put it in an error
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self._clock = clock
        self._container: Any = None
        self._stream: Any = None
        self.gop = GopEstimator()
        self.mode: DecodeMode = "all"
        self.catching_up = False
        self.packets = 0
        self.frames = 0
        self.decode_errors = 0
        self.skipped = 0

    @property
    def fps(self) -> float:
        """Nominal frame rate (average, else guessed, else 25)."""
        rate = None
        if self._stream is not None:
            rate = self._stream.average_rate or self._stream.guessed_rate
        return float(rate) if rate else 25.0

    @property
    def size(self) -> tuple[int, int] | None:
        if self._stream is None:
            return None
        return (int(self._stream.width), int(self._stream.height))

    def open(self) -> None:
        options = open_options(self._url, self.read_timeout_s)
        try:
            self._container = av.open(
                self._url,
                options=options,
                timeout=(self.open_timeout_s, self.read_timeout_s),
            )
        except av.error.FFmpegError as exc:
            raise _classify(exc, during_open=True) from None
        except OSError as exc:
            raise ReaderError(safe_error(exc)) from None
        if not self._container.streams.video:
            self.close()
            raise ReaderError("the source has no video stream")
        self._stream = self._container.streams.video[0]
        # One decoding thread per camera: streams are scaled across cameras, not inside one.
        self._stream.thread_type = "SLICE"
        self._stream.codec_context.thread_count = 1
        self._apply_skip()

    def set_mode(self, mode: DecodeMode, catching_up: bool = False) -> None:
        """Switch between decoding every frame and keyframes only (takes effect at once)."""
        if mode != self.mode or catching_up != self.catching_up:
            self.mode, self.catching_up = mode, catching_up
            self._apply_skip()

    def _apply_skip(self) -> None:
        if self._stream is not None:
            skip = self.mode == "keyframes" or self.catching_up
            self._stream.codec_context.skip_frame = "NONKEY" if skip else "DEFAULT"

    def frames_iter(self) -> Iterator[RawFrame]:
        """Decoded frames until the stream fails (ReaderError) or ends (StreamEnded)."""
        if self._container is None:
            raise RuntimeError("open() first")
        stream = self._stream
        time_base = stream.time_base
        last_frame = self._clock()
        try:
            for packet in self._container.demux(stream):
                # A size-0 packet ends the stream; decoding it drains the decoder's delay.
                if packet.size:
                    self.packets += 1
                    if packet.is_keyframe and packet.pts is not None and time_base is not None:
                        self.gop.observe_keyframe(float(packet.pts * time_base))
                    elif self.catching_up and self.mode == "all":
                        self.skipped += 1
                got = 0
                for frame in self._decode(packet):
                    got += 1
                    pts = frame.pts
                    pts_time = None if pts is None or time_base is None else float(pts * time_base)
                    yield RawFrame(pts_time, bool(frame.key_frame), frame)
                now = self._clock()
                if got:
                    last_frame = now
                elif now - last_frame > self._stall_limit(first=self.frames == 0):
                    raise StallError(f"no frame decoded for {now - last_frame:.1f} s")
        except av.error.FFmpegError as exc:
            raise _classify(exc, during_open=False) from None
        except OSError as exc:
            raise ReaderError(safe_error(exc)) from None
        raise StreamEnded("end of stream")

    def _stall_limit(self, first: bool) -> float:
        """Keyframe-only decoding, and the wait for the first keyframe after joining a
        stream mid-GOP, legitimately go a whole GOP without a frame."""
        if first:
            return 2.0 * self.stall_timeout_s
        if self.mode == "all" and not self.catching_up:
            return self.stall_timeout_s
        return self.stall_timeout_s + 2.0 * (self.gop.interval() or 0.0)

    def _decode(self, packet: Any) -> list[Any]:
        """Frames of one packet. A decode error is a packet the demuxer flagged corrupt, one
        the decoder refused, or one that gave a frame flagged corrupt (H.264 conceals most
        damage instead of failing); each packet counts at most once."""
        try:
            frames: list[Any] = self._stream.decode(packet)
        except (
            av.error.InvalidDataError,
            av.error.UndefinedError,
            av.error.PatchWelcomeError,
        ) as exc:
            self.decode_errors += 1
            log.debug("decode error: %s", safe_error(exc))
            return []
        if packet.is_corrupt or any(f.is_corrupt for f in frames):
            self.decode_errors += 1
        self.frames += len(frames)
        return frames

    def close(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception as exc:  # closing a broken connection must not mask the cause
                log.debug("close: %s", safe_error(exc))
            self._container = None
            self._stream = None
