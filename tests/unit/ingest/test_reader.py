"""Reader pieces that need no server: FFmpeg options, destination policy, error texts."""

from __future__ import annotations

import av
import pytest

from flashwatch.security import NetworkPolicy
from ingest.reader import (
    AuthError,
    OpenTimeout,
    ReaderError,
    StallError,
    _classify,
    check_destination,
    open_options,
)


def test_rtsp_options_use_tcp_a_microsecond_timeout_and_a_whitelist() -> None:
    opts = open_options("rtsp://cam.example/stream", read_timeout_s=2.5)
    assert opts == {
        "rtsp_transport": "tcp",
        "timeout": "2500000",
        "protocol_whitelist": "rtsp,rtp,tcp,udp,tls",
    }


def test_file_sources_may_only_open_files() -> None:
    assert open_options("file:///data/x.mp4", 5.0) == {"protocol_whitelist": "file"}


@pytest.mark.parametrize(
    "url",
    ["rtsp://127.0.0.1/x", "rtsp://localhost:8554/x", "rtsp://[::1]/x", "rtsp://169.254.169.254/x"],
)
def test_destination_policy_is_checked_on_resolved_addresses(url: str) -> None:
    with pytest.raises(ReaderError, match="camera address"):
        check_destination(url, NetworkPolicy())


def test_loopback_allowed_by_policy() -> None:
    check_destination("rtsp://127.0.0.1:8554/x", NetworkPolicy(allow_loopback=True))
    check_destination("file:///x.mp4", NetworkPolicy())  # files are not network destinations


def test_unresolvable_host_is_a_reader_error() -> None:
    with pytest.raises(ReaderError, match="resolve"):
        check_destination("rtsp://no-such-host.invalid/x", NetworkPolicy())


def test_errors_are_classified_and_redacted() -> None:
    url = "rtsp://admin:pa55word@cam.example/x"
    unauthorized = av.error.HTTPUnauthorizedError(825242872, "Server returned 401", url)
    err = _classify(unauthorized, during_open=True)
    assert isinstance(err, AuthError) and "pa55word" not in str(err) and "***@" in str(err)
    invalid = av.error.InvalidDataError(1094995529, "Invalid data", url)
    assert isinstance(_classify(invalid, during_open=True), OpenTimeout)
    assert not isinstance(_classify(invalid, during_open=False), OpenTimeout)
    exit_error = av.error.ExitError(1414092869, "Immediate exit requested", url)
    stall = _classify(exit_error, during_open=False)
    assert isinstance(stall, StallError) and "pa55word" not in str(stall)
