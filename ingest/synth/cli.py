"""``flashwatch synth ...``: generate synthetic camera footage and inspect its ground truth.

A typer sub-app (``synth_app``) so the main CLI mounts it with ``app.add_typer(synth_app,
name="synth")``; it only touches local files, never the API.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ingest.synth.scene import Scene, SceneSpec
from ingest.synth.script import EventSpec
from ingest.synth.truth import Event, GroundTruth
from ingest.synth.video import read_truth, truth_path, write_video

synth_app = typer.Typer(
    no_args_is_help=True, help="Synthetic surveillance footage with ground truth."
)

SeedOpt = Annotated[int, typer.Option(help="Seed: same seed and options → same pixels.")]
EventsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--events",
        "-e",
        help="Scripted event, repeatable or comma-separated: COLOUR_(person|car)_"
        "(crosses|parks|stops|loiters|drops[_COLOUR_bag])@SECONDS[+DWELL], "
        "e.g. red_car_parks@120.",
    ),
]
SizeOpt = Annotated[str, typer.Option(help="Frame size WIDTHxHEIGHT (even).")]
PeopleOpt = Annotated[float, typer.Option(help="Background people crossing per minute.")]
CarsOpt = Annotated[float, typer.Option(help="Background cars passing per minute.")]


def _events(raw: list[str] | None) -> tuple[str, ...]:
    items = tuple(s.strip() for r in raw or [] for s in r.split(",") if s.strip())
    for item in items:
        try:
            EventSpec.parse(item)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--events") from None
    return items


def frame_size(text: str) -> tuple[int, int]:
    """Parse "WxH" into (w, h), or raise a usage error naming the rule (even sides, at least 32)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"{text!r}: use WIDTHxHEIGHT, e.g. 320x240") from None
    if w % 2 or h % 2 or w < 32 or h < 32:
        raise typer.BadParameter(f"{text!r}: both sides even and at least 32")
    return w, h


@synth_app.command("video")
def video_cmd(
    out: Annotated[Path, typer.Argument(help="Output video, e.g. cam.mp4.")],
    seed: SeedOpt = 0,
    minutes: Annotated[float | None, typer.Option(help="Length in minutes.")] = None,
    seconds: Annotated[float | None, typer.Option(help="Length in seconds.")] = None,
    events: EventsOpt = None,
    fps: Annotated[float, typer.Option(help="Frames per second.")] = 25.0,
    size: SizeOpt = "320x240",
    people_per_min: PeopleOpt = 2.0,
    cars_per_min: CarsOpt = 1.0,
    random_needles: Annotated[int, typer.Option(help="Extra random scripted events.")] = 0,
    preset: Annotated[str, typer.Option(help="x264 preset.")] = "veryfast",
) -> None:
    """Write an H.264 video and OUT.truth.json (default length 1 minute)."""
    if minutes is not None and seconds is not None:
        raise typer.BadParameter("give --minutes or --seconds, not both")
    duration = seconds if seconds is not None else 60.0 * (minutes if minutes else 1.0)
    if duration <= 0:
        raise typer.BadParameter("length must be positive")
    width, height = frame_size(size)
    spec = SceneSpec(
        seed=seed,
        duration=duration,
        events=_events(events),
        width=width,
        height=height,
        fps=fps,
        people_per_min=people_per_min,
        cars_per_min=cars_per_min,
        random_needles=random_needles,
    )
    scene = Scene.from_spec(spec)
    write_video(scene, out, preset=preset)
    n_needles = len({e.actor_id for e in scene.truth.events if e.needle})
    typer.echo(
        f"wrote {out} ({duration:g} s, {scene.n_frames} frames, {width}x{height}@{fps:g}, "
        f"{len(scene.truth.tracks)} actors, {n_needles} scripted) and {truth_path(out)}"
    )


@synth_app.command("frame")
def frame_cmd(
    out: Annotated[Path, typer.Argument(help="Output image, e.g. frame.png.")],
    t: Annotated[float, typer.Option("--t", help="Scene time in seconds.")] = 0.0,
    seed: SeedOpt = 0,
    events: EventsOpt = None,
    size: SizeOpt = "320x240",
    people_per_min: PeopleOpt = 2.0,
    cars_per_min: CarsOpt = 1.0,
) -> None:
    """Render one frame as an image (to eyeball a scene without encoding video)."""
    from PIL import Image

    width, height = frame_size(size)
    ev = _events(events)
    duration = max([t + 1.0] + [EventSpec.parse(e).t + 120.0 for e in ev])
    spec = SceneSpec(seed, duration, ev, width, height, 25.0, people_per_min, cars_per_min)
    Image.fromarray(Scene.from_spec(spec).render(t)).save(out)
    typer.echo(f"wrote {out}")


@synth_app.command("truth")
def truth_cmd(
    file: Annotated[Path, typer.Argument(help="A video with a .truth.json beside, or the JSON.")],
    at: Annotated[float | None, typer.Option(help="Only events active at this time (s).")] = None,
    needles: Annotated[bool, typer.Option(help="Only scripted (needle) events.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Print the ground-truth events of a generated video."""
    try:
        truth = read_truth(file)
    except FileNotFoundError:
        typer.echo(f"no ground truth for {file} (expected {truth_path(file)})", err=True)
        raise typer.Exit(2) from None
    evs = _select(truth, at, needles)
    if as_json:
        typer.echo(json.dumps([e.__dict__ for e in evs], indent=1))
        return
    typer.echo(f"seed {truth.seed}, {truth.duration:g} s, {len(truth.tracks)} actors")
    for e in evs:
        mark = "*" if e.needle else " "
        typer.echo(
            f"{mark} {e.t_start:9.2f}–{e.t_end:9.2f} s  {e.kind:<6} {e.colour} {e.actor_kind}"
            f"  in {e.region} (actor {e.actor_id})"
        )


def _select(truth: GroundTruth, at: float | None, needles: bool) -> list[Event]:
    evs = truth.events if at is None else truth.active(at, at)
    return [e for e in evs if e.needle or not needles]
