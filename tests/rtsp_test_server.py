#!/usr/bin/python3
"""Minimal RTSP server for the test suite, built on GStreamer's gst-rtsp-server.

Runs with Debian's /usr/bin/python3 (it has ``gi``), not the project venv:

    /usr/bin/python3 tests/rtsp_test_server.py PORT /cam1=clip.mp4 /cam2=test /cam3=test:640x360@25

* ``PORT`` may be 0: the kernel picks a free port.
* ``MOUNT=PATH.mp4``: streams the H.264 track of an MP4 file without re-encoding. The stream ends
  at the end of the file (a client's decode iterator then simply ends), so use a clip that is
  long enough for the test.
* ``MOUNT=test[:WxH[@FPS]]``: a live, never-ending ``videotestsrc`` ball pattern encoded with
  openh264 (default 320x240@25, GOP 1 s).

Binds 127.0.0.1 only; TCP interleaved and UDP transports both work. Prints ``ready PORT`` on
stdout once listening. SIGTERM or SIGINT exits cleanly with status 0. Exit status 3 means the
GStreamer introspection bindings are missing (install the apt packages of scripts/bootstrap.sh),
2 means bad arguments, 1 means the server could not listen.
"""

import os
import re
import signal
import sys


def _die(code: int, msg: str) -> None:
    print(f"rtsp_test_server: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


try:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer
except (ImportError, ValueError) as exc:  # ValueError: namespace not available
    _die(
        3,
        f"GStreamer RTSP bindings unavailable ({exc}); install gir1.2-gst-rtsp-server-1.0 "
        "gstreamer1.0-plugins-{base,good,bad} python3-gi (scripts/bootstrap.sh)",
    )

_TEST_SPEC = re.compile(r"^test(?::(\d+)x(\d+)(?:@(\d+))?)?$")


def pipeline_for(source: str) -> str:
    """gst-launch description of the media for one mount."""
    pay = "h264parse ! rtph264pay name=pay0 pt=96 config-interval=1"
    m = _TEST_SPEC.match(source)
    if m:
        width, height = int(m.group(1) or 320), int(m.group(2) or 240)
        fps = int(m.group(3) or 25)
        return (
            f"( videotestsrc is-live=true pattern=ball "
            f"! video/x-raw,width={width},height={height},framerate={fps}/1 "
            f"! openh264enc gop-size={fps} ! {pay} )"
        )
    if not os.path.isfile(source):
        _die(2, f"no such file: {source}")
    location = os.path.abspath(source).replace("\\", "\\\\").replace('"', '\\"')
    return f'( filesrc location="{location}" ! qtdemux ! {pay} )'


def main(argv: list[str]) -> int:
    if len(argv) < 3 or not argv[1].isdigit():
        _die(2, "usage: rtsp_test_server.py PORT /mount=FILE.mp4|test[:WxH[@FPS]] ...")
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(argv[1])
    mounts = server.get_mount_points()
    for spec in argv[2:]:
        mount, sep, source = spec.partition("=")
        if not sep or not mount.startswith("/") or not source:
            _die(2, f"bad mount spec {spec!r}; expected /name=FILE.mp4 or /name=test")
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(pipeline_for(source))
        factory.set_shared(True)
        mounts.add_factory(mount, factory)

    if server.attach(None) == 0:
        _die(1, f"could not listen on 127.0.0.1:{argv[1]}")

    loop = GLib.MainLoop()

    def _quit() -> bool:
        loop.quit()
        return GLib.SOURCE_REMOVE

    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, _quit)
    print(f"ready {server.get_bound_port()}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
