"""`flashwatch demo` end to end on a random full checkpoint: synthetic cameras are rendered
and registered through the API, the standing rule is created, the footage plays in real time
through every role, and the question is answered through POST /v1/queries (the model is
random, so this checks the orchestration and the contracts, not the answers)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from flashwatch.demo import DemoCamera, DemoOptions, run_demo
from memory.testing import free_port
from tests.checkpoints import write_full_random_checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_registers_cameras_rule_and_answers(tmp_path: Path) -> None:
    ckpt = write_full_random_checkpoint(tmp_path / "model")
    lines: list[str] = []
    opts = DemoOptions(
        data_dir=tmp_path / "demo",
        port=free_port(),
        seconds=60,
        linger_s=0,
        model_dir=ckpt,
        cameras=(DemoCamera("gate", 11, ("red_car_parks@20+30",)),),
    )
    result = run_demo(opts, echo=lines.append)
    text = "\n".join(lines)
    assert "rendered camera 'gate'" in text and "standing rule" in text
    body = result["answer"]
    assert isinstance(body["answer"], str) and body["frames"] > 0 and body["frames"] % 4 == 0
    assert body["strategy"] in ("pyramid", "zoom", "sparse")
    assert "answer: " in text
    assert set(result["alerts"]) == {"gate"}
    # the API is gone after the demo returns, and the admin token stayed in its 0600 file
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{opts.port}/v1/health", timeout=1)
    token_file = opts.data_dir / "admin.token"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    assert token_file.read_text().strip() not in text
