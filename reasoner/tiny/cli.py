"""``flashwatch tiny ...``: train and evaluate the bundled tiny model (issue 8, item 2).

A typer sub-app (``tiny_app``); the main CLI mounts it with ``app.add_typer(tiny_app,
name="tiny")``. Training and evaluation run on the CPU.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

tiny_app = typer.Typer(
    no_args_is_help=True, help="Train / evaluate the tiny synthetic-world model."
)


@tiny_app.command("train")
def train_cmd(
    out: Annotated[Path, typer.Option(help="Model directory to write.")] = Path("models/tiny"),
    minutes: Annotated[float, typer.Option(help="Wall-clock budget, export included.")] = 40.0,
    seed: Annotated[int, typer.Option(help="Seed for data, init and batches.")] = 0,
    steps: Annotated[
        int | None, typer.Option(help="Fixed step count (bit-reproducible) instead of minutes.")
    ] = None,
    threads: Annotated[
        int, typer.Option(help="torch CPU threads (1 is fastest on a shared 2-core machine).")
    ] = 1,
    scenes: Annotated[int, typer.Option(help="Training scenes (4 windows each).")] = 200,
    init: Annotated[
        Path | None, typer.Option(help="Continue from an exported model directory.")
    ] = None,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 2e-3,
    warmup: Annotated[int, typer.Option(help="Warm-up steps.")] = 100,
    min_clips: Annotated[int, typer.Option(help="Fewest 4-frame clips per window.")] = 4,
    max_clips: Annotated[int, typer.Option(help="Most 4-frame clips per window.")] = 16,
    questions: Annotated[int, typer.Option(help="Questions per window per step.")] = 8,
    batch_windows: Annotated[
        int, typer.Option(min=1, help="Windows drawn from the pool per training step.")
    ] = 4,
    stage: Annotated[
        str,
        typer.Option(
            help="oracle (symbolic visual tokens), encoder (vision side distilled onto "
            "them, no LLM pass) or video (pixels, end to end)."
        ),
    ] = "video",
    freeze_llm_steps: Annotated[
        int, typer.Option(help="Video stage: steps that train only encoder + projector.")
    ] = 0,
    freeze_vision: Annotated[
        bool,
        typer.Option(
            help="Video stage: keep the encoder (UMT + ToMe) as --init left it; only the "
            "projector and the LLM learn from the answers."
        ),
    ] = False,
    compact: Annotated[
        bool, typer.Option(help="Oracle stage: actor slots only, no filler tokens.")
    ] = False,
    focus: Annotated[
        bool, typer.Option(help="Mostly presence / 'did X happen' questions (alert rules).")
    ] = False,
    distill_weight: Annotated[
        float, typer.Option(help="Video stage: weight of the oracle-token distillation loss.")
    ] = 1.0,
    token_weight: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Encoder/video stage: weight of the per-patch labels before ToMe "
            "(which actor, doing what, is in each patch of each frame).",
        ),
    ] = 0.0,
    apart_weight: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Encoder/video stage: weight of the loss that keeps an actor's body in two "
            "frames of a clip apart on ToMe's metric when it moved between them.",
        ),
    ] = 0.0,
    motion_weight: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Encoder/video stage: weight of the loss that says which people and cars move "
            "during their clip, on the patches under them and on the merged tokens holding them.",
        ),
    ] = 0.0,
    hidden: Annotated[int, typer.Option(help="LLM hidden size (a new model only).")] = 256,
    layers: Annotated[int, typer.Option(help="LLM decoder layers (a new model only).")] = 4,
    heads: Annotated[int, typer.Option(help="LLM attention heads (a new model only).")] = 8,
    kv_heads: Annotated[int, typer.Option(help="LLM key/value heads (a new model only).")] = 4,
    vision_depth: Annotated[
        int, typer.Option(min=1, help="Encoder blocks (a new model only).")
    ] = 2,
    tome_groups: Annotated[
        int,
        typer.Option(
            min=1,
            help="ToMe metric channel groups (a new model only): 2 gives a 128-wide encoder "
            "the reference's 64-d metric.",
        ),
    ] = 16,
    image_size: Annotated[
        int | None,
        typer.Option(
            help="Input frame size in px (default: the model's own, 64 for a new model); with "
            "--init, continue a trained model at this size.",
        ),
    ] = None,
    explain_share: Annotated[
        float,
        typer.Option(
            min=0.0, max=0.9, help="Share of 'Explain briefly' questions (alert reasons)."
        ),
    ] = 0.0,
    event_yes: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Share of event questions asked about an event the window shows "
            "(rare events such as loitering get positives; 0 = the natural mix).",
        ),
    ] = 0.0,
    still_share: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Share of training windows re-rendered with some people and cars held still "
            "(labelled loitering, stopped or parked by where they stand).",
        ),
    ] = 0.0,
    renders: Annotated[
        str, typer.Option(help="Camera sizes WxH, comma-separated; scenes cycle through them.")
    ] = "160x120,320x240",
    per_question_loss: Annotated[
        bool,
        typer.Option(
            help="Weigh every question the same, not every answer token (long explain "
            "answers otherwise outweigh the yes/no ones)."
        ),
    ] = False,
    decoy: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Share of event questions asked about an actor of that kind and colour on "
            "screen that does not do the event, where the window has one (evaluation: 0.3).",
        ),
    ] = 0.3,
) -> None:
    """Train encoder + projector + LLM end to end and export a VideoChat-Flash directory."""
    from ingest.synth.cli import frame_size
    from reasoner.tiny.model import TinyConfig
    from reasoner.tiny.train import TrainOptions, check_options, train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    opts = TrainOptions(
        seed=seed, minutes=minutes, steps=steps, threads=threads, scenes=scenes, init=init,
        lr=lr, warmup=warmup, clips=(min_clips, max_clips), questions_per_window=questions,
        stage=stage, compact=compact, freeze_llm_steps=freeze_llm_steps,
        freeze_vision=freeze_vision,
        distill_weight=distill_weight, focus=focus, explain_share=explain_share,
        event_yes=event_yes, token_weight=token_weight, still_share=still_share,
        apart_weight=apart_weight, motion_weight=motion_weight, image_size=image_size,
        per_question_loss=per_question_loss, decoy=decoy, batch_windows=batch_windows,
        renders=tuple(frame_size(r.strip()) for r in renders.split(",") if r.strip()),
        config=TinyConfig(hidden_size=hidden, num_layers=layers, num_heads=heads,
                          num_kv_heads=kv_heads, intermediate_size=2 * hidden,
                          tome_groups=tome_groups,
                          vision_depth=vision_depth),  # ignored with init
    )  # fmt: skip
    try:
        check_options(opts)  # options that only conflict together
    except ValueError as exc:
        typer.echo(f"tiny train: {exc}", err=True)
        raise typer.Exit(2) from None
    summary = train(opts, out)
    summary.pop("history", None)
    typer.echo(json.dumps(summary, indent=2))


@tiny_app.command("eval")
def eval_cmd(
    model: Annotated[Path, typer.Option(help="Model directory.")] = Path("models/tiny"),
    windows: Annotated[int, typer.Option(help="Held-out windows (8 questions each).")] = 60,
    seed: Annotated[int, typer.Option(help="Held-out seed offset.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Write the JSON report here.")] = None,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 1,
    render: Annotated[str, typer.Option(help="Camera frame size WxH before the resize.")] = (
        "160x120"
    ),
    drop: Annotated[
        bool, typer.Option(help="Token dropping as config.json's llm_compress_* fields say.")
    ] = False,
    oracle: Annotated[
        bool,
        typer.Option(
            help="Ground-truth visual tokens instead of pixels: the LLM's accuracy with a "
            "perfect encoder."
        ),
    ] = False,
    query_long: Annotated[
        bool,
        typer.Option(
            help="Also ask the yes/no questions on windows longer than the model's "
            "fw_max_frames through the query path (memory, scan and zoom), as a user would."
        ),
    ] = False,
) -> None:
    """Accuracy per question kind on held-out scene seeds, through the normal loaders."""
    from ingest.synth.cli import frame_size
    from reasoner.loading import drop_config_from_dict
    from reasoner.tiny.evaluate import evaluate

    w, h = frame_size(render)
    drop_cfg = None
    if drop:
        cfg = json.loads((model / "config.json").read_text())
        drop_cfg = drop_config_from_dict({**cfg, "mm_llm_compress": True})
    report = evaluate(
        model,
        windows=windows,
        seed=seed,
        threads=threads,
        render=(w, h),
        drop=drop_cfg,
        oracle=oracle,
        query_long=query_long,
    )
    text = json.dumps(report, indent=2)
    if out is not None:
        out.write_text(text + "\n")
    typer.echo(text)
