"""The `flashwatch` command line.

Server-side commands (`serve`, `run`, `config show`, `db upgrade`, `token create`) act on
this machine's config and registry. Operator commands (`camera`, `rule`, `alerts`, `ask`)
talk to a running API over HTTP with a bearer token, so auth is enforced exactly as for
any other client: `--url`/`FLASHWATCH_URL` and `--token`/`FLASHWATCH_TOKEN`, falling back
to <data_dir>/admin.token on the server's own machine.

Exit codes: 0 success, 1 the API refused the request (4xx), 2 bad usage, 3 bad
configuration, 4 the API could not be reached or failed (5xx).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from flashwatch.cli import client as http
from flashwatch.config import ConfigError, Settings, load_settings, redacted_dump

app = typer.Typer(no_args_is_help=True, add_completion=False, help="FlashWatch command line.")
camera_app = typer.Typer(no_args_is_help=True, help="Register and inspect cameras.")
rule_app = typer.Typer(no_args_is_help=True, help="Standing natural-language rules.")
alerts_app = typer.Typer(no_args_is_help=True, help="Alerts.")
token_app = typer.Typer(no_args_is_help=True, help="API tokens (acts on the local registry).")
config_app = typer.Typer(no_args_is_help=True, help="Configuration.")
db_app = typer.Typer(no_args_is_help=True, help="Registry database.")
engine_app = typer.Typer(
    no_args_is_help=True, help="Encoder artifacts: ONNX graph, TensorRT engine."
)
for sub, name in (
    (camera_app, "camera"),
    (rule_app, "rule"),
    (alerts_app, "alerts"),
    (token_app, "token"),
    (config_app, "config"),
    (db_app, "db"),
    (engine_app, "engine"),
):
    app.add_typer(sub, name=name)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML or YAML config file.", exists=True)
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def settings_or_exit(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config_file=config, **overrides)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(3) from None


def emit(data: Any, as_json: bool, columns: list[str] | None = None) -> None:
    """Print `data` as JSON for scripts or as an aligned table for people."""
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    rows = data if isinstance(data, list) else [data]
    if not rows:
        typer.echo("(none)")
        return
    cols = columns or list(rows[0].keys())
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    typer.echo("  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True)))
    for row in cells:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------- server side


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Override api.host.")] = None,
    port: Annotated[int | None, typer.Option(help="Override api.port.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Override data_dir.")] = None,
) -> None:
    """Run every role in one process on the embedded defaults (DESIGN §6)."""
    from flashwatch.logging_setup import setup_logging
    from flashwatch.runtime import serve as run_serve

    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    settings = settings_or_exit(config, **overrides)
    if host is not None or port is not None:
        api = settings.api.model_copy(
            update={k: v for k, v in (("host", host), ("port", port)) if v is not None}
        )
        settings = settings_or_exit(config, **overrides, api=api.model_dump())
    setup_logging(settings.log_level, settings.log_json)
    run_serve(settings)


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="API port while the demo runs.")] = 8080,
    data_dir: Annotated[Path, typer.Option(help="Demo data directory (cleared at start).")] = Path(
        "data/demo"
    ),
    seconds: Annotated[float, typer.Option(min=60, max=3600, help="Footage per camera.")] = 150,
    linger: Annotated[
        float | None,
        typer.Option(help="Seconds the API stays up after the answer (default: until Ctrl-C)."),
    ] = None,
    model_dir: Annotated[
        Path | None, typer.Option(help="Model directory (default: the bundled tiny model).")
    ] = None,
) -> None:
    """Synthetic cameras, a standing rule, live alerts and a question, all in one process."""
    from flashwatch.demo import DemoOptions, run_demo
    from flashwatch.logging_setup import setup_logging

    setup_logging("WARNING", False)
    opts = DemoOptions(
        data_dir=data_dir, port=port, seconds=seconds, linger_s=linger, model_dir=model_dir
    )
    try:
        run_demo(opts, echo=typer.echo)
    except (RuntimeError, ConfigError) as exc:
        typer.echo(f"demo failed: {exc}", err=True)
        raise typer.Exit(3) from None


@app.command()
def run(
    role: Annotated[str, typer.Argument(help="api | ingest | encoder | reasoner | alerts")],
    config: ConfigOpt = None,
) -> None:
    """Run one role alone (distributed mode)."""
    from flashwatch.logging_setup import setup_logging
    from flashwatch.runtime import ROLES
    from flashwatch.runtime import serve as run_serve

    if role not in ROLES:
        typer.echo(f"unknown role {role!r}; choose one of {', '.join(ROLES)}", err=True)
        raise typer.Exit(2)
    settings = settings_or_exit(config)
    setup_logging(settings.log_level, settings.log_json)
    run_serve(settings, roles=(role,))


@config_app.command("show")
def config_show(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Print the effective configuration with secrets redacted."""
    data = redacted_dump(settings_or_exit(config))
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    for section, values in data.items():
        if isinstance(values, dict):
            typer.echo(f"[{section}]")
            for k, v in values.items():
                typer.echo(f"{k} = {json.dumps(v, default=str)}")
            typer.echo("")
        else:
            typer.echo(f"{section} = {json.dumps(values, default=str)}")


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None) -> None:
    """Create or migrate the registry schema to the newest version."""
    from flashwatch.db.engine import create_db_engine, current_revision, upgrade

    settings = settings_or_exit(config)
    engine = create_db_engine(settings.db_url)
    upgrade(engine)
    typer.echo(f"registry at revision {current_revision(engine)}")


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="Who or what the token is for.")],
    role: Annotated[str, typer.Option(help="viewer | operator | admin")] = "viewer",
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API token in the local registry and print it once."""
    from sqlmodel import Session

    from flashwatch import registry
    from flashwatch.runtime import build_state

    if role not in ("viewer", "operator", "admin"):
        typer.echo(f"role must be viewer, operator or admin, not {role!r}", err=True)
        raise typer.Exit(2)
    if not 1 <= len(name) <= 100:
        typer.echo("name must be 1 to 100 characters", err=True)
        raise typer.Exit(2)
    state = build_state(settings_or_exit(config))
    with Session(state.engine) as session:
        row, token = registry.create_token(session, name, role)
    out = {"id": row.id, "name": name, "role": role, "token": token}
    if as_json:
        typer.echo(json.dumps(out))
    else:
        typer.echo(f"token {row.id} ({role}) for {name}; shown once, store it now:\n{token}")


def _model_dir(settings: Settings, model_dir: Path | None) -> Path:
    chosen = model_dir or settings.encoder.model_dir
    if chosen is None:
        typer.echo("no model directory: pass --model-dir or set encoder.model_dir", err=True)
        raise typer.Exit(2)
    return chosen


def _cache_dir(settings: Settings) -> Path:
    return settings.encoder.engine_cache_dir or settings.data_dir / "engines"


ModelDirOpt = Annotated[
    Path | None,
    typer.Option("--model-dir", help="VideoChat-Flash checkpoint directory.", exists=True),
]
MaxBatchOpt = Annotated[int | None, typer.Option(help="Largest batch (default encoder.max_batch).")]


@engine_app.command("export")
def engine_export(
    model_dir: ModelDirOpt = None,
    max_batch: MaxBatchOpt = None,
    force: Annotated[bool, typer.Option(help="Export even if cached.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Export UMT + ToMe to ONNX (dynamic batch 1..max) into the engine cache; print its path."""
    from encoder_trt.artifacts import ensure_onnx

    settings = settings_or_exit(config)
    path = ensure_onnx(
        _model_dir(settings, model_dir),
        _cache_dir(settings),
        max_batch or settings.encoder.max_batch,
        force=force,
    )
    typer.echo(str(path))


@engine_app.command("build")
def engine_build(
    model_dir: ModelDirOpt = None,
    max_batch: MaxBatchOpt = None,
    precision: Annotated[str, typer.Option(help="fp16 | bf16")] = "fp16",
    config: ConfigOpt = None,
) -> None:
    """Build (or reuse) the TensorRT engine for this model, GPU and TensorRT version.

    Needs the `trt` extra (tensorrt, pycuda) and a CUDA GPU."""
    from encoder_trt.artifacts import ensure_onnx
    from encoder_trt.trt_engine import build_engine

    settings = settings_or_exit(config)
    batch = max_batch or settings.encoder.max_batch
    onnx = ensure_onnx(_model_dir(settings, model_dir), _cache_dir(settings), batch)
    try:
        engine = build_engine(onnx, _cache_dir(settings), precision=precision, max_batch=batch)
    except (ImportError, RuntimeError, ValueError) as exc:
        typer.echo(f"cannot build a TensorRT engine: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(str(engine))


# ---------------------------------------------------------------- API clients

http.register(app, camera_app, rule_app, alerts_app, emit)


def _mount_tools() -> None:
    from ingest.synth.cli import synth_app
    from reasoner.tiny.cli import tiny_app

    app.add_typer(synth_app, name="synth", help="Synthetic camera footage with ground truth.")
    app.add_typer(tiny_app, name="tiny", help="Train and evaluate the tiny synthetic-world model.")


_mount_tools()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except http.CliError as exc:
        typer.echo(str(exc), err=True)
        sys.exit(exc.code)
