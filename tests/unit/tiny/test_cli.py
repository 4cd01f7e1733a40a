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
    ],
)
def test_bad_camera_size_exits_2_naming_it(args: list[str], message: str, tmp_path: Path) -> None:
    out = tmp_path / "never"
    res = runner.invoke(tiny_app, [*args, "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not out.exists()
