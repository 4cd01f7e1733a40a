"""`flashwatch tiny`: camera sizes and the explain share are checked at the edge, before any
training or loading."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from reasoner.tiny.cli import tiny_app

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--renders", "160x120,99x7"], "99x7"),
        (["train", "--renders", "big"], "WIDTHxHEIGHT"),
        (["eval", "--render", "160by120"], "WIDTHxHEIGHT"),
        (["train", "--explain-share", "1.5"], "explain-share"),
        (["train", "--event-yes", "-0.1"], "event-yes"),
        (["train", "--token-weight", "-1"], "token-weight"),
        (["train", "--tome-groups", "0"], "tome-groups"),
        (["train", "--vision-depth", "0"], "vision-depth"),
        (["train", "--still-share", "1.5"], "still-share"),
        (["train", "--batch-windows", "0"], "batch-windows"),
        (["train", "--stage", "oracle", "--freeze-vision"], "freeze_vision applies to the video"),
        (["train", "--scenes", "1", "--batch-windows", "5"], "batch_windows 5 exceeds the 4"),
    ],
)
def test_bad_camera_size_exits_2_naming_it(args: list[str], message: str, tmp_path: Path) -> None:
    out = tmp_path / "never"
    res = runner.invoke(tiny_app, [*args, "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not out.exists()


def test_a_new_model_takes_its_tome_groups_and_encoder_depth_from_the_command_line(
    tmp_path: Path,
) -> None:
    """`--tome-groups 2 --vision-depth 3` reach config.json (both the training config and the
    loaders') and the weights: the normal encoder loader builds three blocks from them."""
    import json

    from encoder_trt.checkpoint import load_clip_encoder

    out = tmp_path / "m"
    res = runner.invoke(tiny_app, [
        "train", "--out", str(out), "--stage", "oracle", "--compact", "--steps", "1",
        "--scenes", "1", "--min-clips", "1", "--max-clips", "1", "--questions", "1",
        "--hidden", "32", "--heads", "2", "--kv-heads", "1", "--layers", "1", "--tome-groups", "2",
        "--vision-depth", "3",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["fw_tiny"]["config"]["tome_groups"] == 2
    assert cfg["fw_vision_config"]["tome_groups"] == 2
    assert cfg["fw_tiny"]["config"]["vision_depth"] == 3
    encoder, _ = load_clip_encoder(out)
    assert encoder.config.depth == 3 and len(encoder.encoder.blocks) == 3


def test_still_share_and_batch_windows_reach_the_run_and_the_model_says_how_it_was_made(
    tmp_path: Path,
) -> None:
    """`--still-share` and `--batch-windows` reach the run: its summary in config.json records
    them (what held-still windows show is `test_data`'s)."""
    import json

    out = tmp_path / "m"
    res = runner.invoke(tiny_app, [
        "train", "--out", str(out), "--stage", "oracle", "--compact", "--steps", "1",
        "--scenes", "1", "--min-clips", "1", "--max-clips", "1", "--questions", "1",
        "--hidden", "32", "--heads", "2", "--kv-heads", "1", "--layers", "1",
        "--still-share", "0.5", "--batch-windows", "3",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    options = json.loads((out / "config.json").read_text())["fw_tiny"]["training"]["options"]
    assert options["still_share"] == 0.5 and options["stage"] == "oracle"
    assert options["batch_windows"] == 3
