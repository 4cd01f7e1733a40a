"""Operator commands that call a running FlashWatch API over HTTP."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

DEFAULT_URL = "http://127.0.0.1:8080"
CAMERA_COLS = ["id", "name", "url", "enabled", "has_credentials", "labels"]
RULE_COLS = ["id", "name", "mode", "severity", "camera_ids", "all_cameras", "enabled", "text"]
ALERT_COLS = ["id", "created_at", "rule_id", "camera_id", "severity", "score", "reason"]


class CliError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


UrlOpt = Annotated[
    str | None, typer.Option("--url", help="API base URL (FLASHWATCH_URL).", show_default=False)
]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", help="Bearer token (FLASHWATCH_TOKEN).", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def _token(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    if os.environ.get("FLASHWATCH_TOKEN"):
        return os.environ["FLASHWATCH_TOKEN"]
    data_dir = Path(os.environ.get("FW_DATA_DIR", "data"))
    path = data_dir / "admin.token"
    if path.is_file():
        return path.read_text().strip()
    return None


def call(
    method: str,
    path: str,
    *,
    url: str | None,
    token: str | None,
    body: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    timeout: float = 30.0,
) -> Any:
    base = (url or os.environ.get("FLASHWATCH_URL") or DEFAULT_URL).rstrip("/")
    headers = {}
    tok = _token(token)
    if tok:
        headers["Authorization"] = f"Bearer {tok}"
    try:
        resp = httpx.request(
            method, base + path, json=body, params=params, headers=headers, timeout=timeout
        )
    except httpx.TimeoutException as exc:
        raise CliError(
            f"no answer from the API at {base} within {timeout:g} s ({type(exc).__name__})", 4
        ) from None
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the API at {base}: {type(exc).__name__}", 4) from None
    if resp.status_code >= 400:
        message = error_message(resp)
        raise CliError(f"error {resp.status_code}: {message}", 1 if resp.status_code < 500 else 4)
    if resp.status_code == 204 or not resp.content:
        return None
    return resp.json()


def error_message(resp: httpx.Response) -> str:
    """The API's error `message`, or the status's reason when the body has none."""
    try:
        return str(resp.json().get("message") or resp.reason_phrase)
    except ValueError:
        return resp.reason_phrase


def parse_labels(values: list[str]) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"label {item!r} must look like key=value")
        out[key.strip()] = value.strip()
    return out


def parse_duration(text: str) -> float:
    """`90s`, `30m`, `2h`, `1d` in seconds."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd])", text.strip())
    if not m:
        raise typer.BadParameter(f"{text!r}: use a duration like 30m, 2h or 1d")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def parse_since(text: str) -> datetime:
    """`90m`, `2h`, `1d` ago, or an ISO-8601 time with offset."""
    if re.fullmatch(r"\d+(?:\.\d+)?\s*[smhd]", text.strip()):
        return datetime.now(UTC) - timedelta(seconds=parse_duration(text))
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r}: use 30m, 2h, 1d or an ISO time") from None
    if when.tzinfo is None:
        raise typer.BadParameter(f"{text!r}: add a time zone offset, e.g. Z")
    return when


def register(
    app: typer.Typer,
    camera_app: typer.Typer,
    rule_app: typer.Typer,
    alerts_app: typer.Typer,
    emit: Callable[..., None],
) -> None:
    """Attach the HTTP-client commands to the CLI's sub-apps."""

    @camera_app.command("add")
    def camera_add(
        name: str,
        stream_url: Annotated[str, typer.Argument(metavar="URL", help="rtsp:// or rtsps://")],
        username: Annotated[str | None, typer.Option(help="Camera user.")] = None,
        password_stdin: Annotated[
            bool, typer.Option(help="Read the camera password from standard input.")
        ] = False,
        interval: Annotated[float, typer.Option(help="Level-0 sample interval, s.")] = 1.0,
        levels: Annotated[int, typer.Option(help="Pyramid levels.")] = 3,
        label: Annotated[list[str] | None, typer.Option(help="key=value, repeatable.")] = None,
        timezone: Annotated[str, typer.Option(help="IANA time zone.")] = "UTC",
        disabled: Annotated[bool, typer.Option(help="Register without reading it.")] = False,
        source_start: Annotated[
            str | None,
            typer.Option(help="file:// imports: ISO time of the file's first frame."),
        ] = None,
        url: UrlOpt = None,
        token: TokenOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Register a camera. Put no password on the command line: use --password-stdin."""
        body: dict[str, Any] = {
            "name": name,
            "url": stream_url,
            "sample_interval_s": interval,
            "pyramid_levels": levels,
            "labels": parse_labels(label or []),
            "timezone": timezone,
            "enabled": not disabled,
        }
        if username is not None:
            body["username"] = username
        if source_start is not None:
            body["source_start_at"] = source_start
        if password_stdin:
            body["password"] = sys.stdin.readline().rstrip("\n")
        emit(call("POST", "/v1/cameras", url=url, token=token, body=body), as_json, CAMERA_COLS)

    @camera_app.command("list")
    def camera_list(url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
        """List cameras."""
        emit(_all_pages("/v1/cameras", url, token), as_json, CAMERA_COLS)

    @camera_app.command("show")
    def camera_show(
        camera_id: int, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
    ) -> None:
        """Show a camera and its ingest status."""
        cam = call("GET", f"/v1/cameras/{camera_id}", url=url, token=token)
        status = call("GET", f"/v1/cameras/{camera_id}/status", url=url, token=token)
        data = cam | {k: v for k, v in status.items() if k not in cam}
        emit(data, as_json, None)

    @camera_app.command("rm")
    def camera_rm(camera_id: int, url: UrlOpt = None, token: TokenOpt = None) -> None:
        """Delete a camera, its rules, alerts and memory."""
        call("DELETE", f"/v1/cameras/{camera_id}", url=url, token=token)
        typer.echo(f"camera {camera_id} deleted")

    @rule_app.command("add")
    def rule_add(
        name: str,
        text: Annotated[str, typer.Argument(help="The condition, in plain language.")],
        camera: Annotated[list[int] | None, typer.Option(help="Camera id, repeatable.")] = None,
        label: Annotated[list[str] | None, typer.Option(help="key=value selector.")] = None,
        all_cameras: Annotated[bool, typer.Option("--all", help="Every camera.")] = False,
        mode: Annotated[str, typer.Option(help="alert | report")] = "alert",
        window: Annotated[float | None, typer.Option(help="Window, s.")] = None,
        step: Annotated[float | None, typer.Option(help="Step, s.")] = None,
        threshold: Annotated[float | None, typer.Option(help="P(yes) threshold.")] = None,
        cooldown: Annotated[float | None, typer.Option(help="Cooldown, s.")] = None,
        severity: Annotated[str | None, typer.Option(help="info..critical")] = None,
        webhook: Annotated[str | None, typer.Option(help="Webhook sink URL.")] = None,
        backfill: Annotated[
            str | None, typer.Option(help="Also evaluate stored history: 30m, 6h, 2d ...")
        ] = None,
        url: UrlOpt = None,
        token: TokenOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Create a standing rule."""
        body: dict[str, Any] = {"name": name, "text": text, "mode": mode}
        if camera:
            body["camera_ids"] = camera
        if label:
            body["camera_labels"] = parse_labels(label)
        if all_cameras:
            body["all_cameras"] = True
        for key, value in (
            ("window_s", window),
            ("step_s", step),
            ("threshold", threshold),
            ("cooldown_s", cooldown),
            ("severity", severity),
        ):
            if value is not None:
                body[key] = value
        if webhook:
            body["sinks"] = [{"type": "webhook", "url": webhook}]
        if backfill:
            body["backfill_s"] = parse_duration(backfill)
        emit(call("POST", "/v1/rules", url=url, token=token, body=body), as_json, RULE_COLS)

    @rule_app.command("list")
    def rule_list(url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
        """List rules."""
        emit(_all_pages("/v1/rules", url, token), as_json, RULE_COLS)

    @rule_app.command("rm")
    def rule_rm(rule_id: int, url: UrlOpt = None, token: TokenOpt = None) -> None:
        """Delete a rule."""
        call("DELETE", f"/v1/rules/{rule_id}", url=url, token=token)
        typer.echo(f"rule {rule_id} deleted")

    @alerts_app.command("list")
    def alerts_list(
        camera: Annotated[int | None, typer.Option(help="Only this camera.")] = None,
        limit: Annotated[int, typer.Option(help="How many.")] = 20,
        url: UrlOpt = None,
        token: TokenOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """The newest alerts."""
        params: dict[str, Any] = {"limit": limit}
        if camera is not None:
            params["camera_id"] = camera
        page = call("GET", "/v1/alerts", url=url, token=token, params=params)
        emit(page["items"], as_json, ALERT_COLS)

    @alerts_app.command("tail")
    def alerts_tail(
        camera: Annotated[int | None, typer.Option(help="Only this camera.")] = None,
        count: Annotated[int, typer.Option(help="Stop after this many (0: forever).")] = 0,
        reconnect: Annotated[
            bool,
            typer.Option(
                help="When the stream drops (an API restart), reconnect and resume after "
                "the last alert seen, so none is missed."
            ),
        ] = True,
        url: UrlOpt = None,
        token: TokenOpt = None,
    ) -> None:
        """Follow new alerts as they fire (one JSON object per line; notes on stderr)."""
        from flashwatch.cli.follow import AlertFollower, StreamRefused

        base = (url or os.environ.get("FLASHWATCH_URL") or DEFAULT_URL).rstrip("/")
        follower = AlertFollower(
            base,
            headers={"Authorization": f"Bearer {_token(token) or ''}"},
            params={"camera_id": camera} if camera else {},
            reconnect=reconnect,
        )
        seen = 0

        def on_alert(alert: dict[str, Any]) -> bool:
            nonlocal seen
            typer.echo(json.dumps(alert))
            seen += 1
            return not (count and seen >= count)

        try:
            follower.follow(on_alert, note=lambda text: typer.echo(text, err=True))
        except StreamRefused as exc:
            raise CliError(str(exc), 1) from None
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the API at {base}: {type(exc).__name__}", 4) from None

    @app.command()
    def ask(
        question: str,
        camera: Annotated[list[int], typer.Option(help="Camera id, repeatable.")],
        since: Annotated[str, typer.Option(help="30m, 2h, 1d or ISO time.")] = "1h",
        url: UrlOpt = None,
        token: TokenOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Ask a question about past footage."""
        body = {"question": question, "camera_ids": camera, "since": parse_since(since).isoformat()}
        answer = call("POST", "/v1/queries", url=url, token=token, body=body, timeout=300)
        if as_json:
            emit(answer, True)
        else:
            typer.echo(answer["answer"])
            for t in answer.get("times", []):
                typer.echo(f"  {t['text']} = {t['at']}")
            typer.echo(
                f"({answer['strategy']} over level {answer['level']}, {answer['frames']} frames, "
                f"{answer['latency_s']:.1f} s)"
            )
            if answer["evidence"]:
                typer.echo("evidence: " + ", ".join(answer["evidence"]))


def _all_pages(path: str, url: str | None, token: str | None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": 500} | ({"cursor": cursor} if cursor else {})
        page = call("GET", path, url=url, token=token, params=params)
        items.extend(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            return items
