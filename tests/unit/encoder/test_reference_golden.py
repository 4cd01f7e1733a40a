"""Our encoder against outputs recorded from the public reference implementation.

`data/reference_tiny_golden.safetensors` was produced by running github OpenGVLab/VideoChat-Flash
(commit 2f8e2f5) `umt/vit.py` (`attn_type='origin'`) and `tome16_mlp_hd64.py`
(`ToMe16_mlp_hd64.merge_tokens`) on CPU in fp32 with the seeded weights of
`encoder_trt.testing.randomize_` (seed = image size, std 0.05) loaded into the reference modules,
and inputs `torch.randn(B, 4, 3, S, S, generator=manual_seed(S + 1))`. The reference code is not
vendored here; only its outputs are. If `randomize_` or torch's CPU RNG changes, the input-sum
check fails first and the file has to be regenerated with the reference.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from encoder_trt.modeling_umt import UMTClipEncoder, UMTConfig
from encoder_trt.testing import randomize_

GOLDEN = Path(__file__).parent / "data" / "reference_tiny_golden.safetensors"


@pytest.mark.parametrize(("size", "batch"), [(224, 2), (448, 1)])
def test_matches_reference_outputs(size: int, batch: int) -> None:
    golden = load_file(str(GOLDEN))
    cfg = UMTConfig(image_size=size, embed_dim=64, num_heads=4, depth=2)
    model = randomize_(UMTClipEncoder(cfg), seed=size, std=0.05).eval()
    x = torch.randn(batch, 4, 3, size, size, generator=torch.Generator().manual_seed(size + 1))
    torch.testing.assert_close(
        x.sum().reshape(1), golden[f"s{size}_input_sum"], rtol=1e-6, atol=1e-3,
        msg="seeded input changed: regenerate the golden file with the reference code",
    )  # fmt: skip
    with torch.no_grad():
        feats = model.encoder(x)  # (B, N, C)
        tokens = model(x)  # (B, 64, C)
    torch.testing.assert_close(
        feats.sum(-1), golden[f"s{size}_feature_token_sums"], rtol=1e-5, atol=1e-4
    )
    # same tokens in the same order as the reference's ToMe output
    torch.testing.assert_close(tokens, golden[f"s{size}_tokens"], rtol=1e-5, atol=1e-5)
