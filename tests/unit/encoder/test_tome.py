"""ToMe (`encoder_trt.tome`) against the spec's schedule and an independent loop implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encoder_trt.tome import (
    bipartite_soft_matching,
    hd_metric,
    merge_schedule,
    merge_wavg,
    tome_compress,
)


@pytest.mark.parametrize(
    ("p0", "expected"),
    [
        (784, [392, 196, 98, 34]),  # 224 video clip
        (3136, [1568, 784, 392, 196, 98, 34]),  # 448 video clip
        (196, [98, 34]),  # 224 image
        (144, [72, 8]),  # tiny test config
        (65, [1]),
        (64, []),
    ],
)
def test_merge_schedule(p0: int, expected: list[int]) -> None:
    schedule = merge_schedule(p0, 64)
    assert schedule == expected
    assert p0 - sum(schedule) == 64


def test_merge_schedule_448_image_matches_224_video() -> None:
    assert merge_schedule(784) == [392, 196, 98, 34]


def test_merge_schedule_rejects_too_few_tokens() -> None:
    with pytest.raises(ValueError, match="63"):
        merge_schedule(63, 64)


def reference_tome_loop(x: np.ndarray, schedule: list[int], groups: int) -> np.ndarray:
    """Straightforward per-clip, per-step, per-token version of spec §2.2 (float64)."""
    out = []
    for clip in x:
        tokens = [clip[i].copy() for i in range(clip.shape[0])]
        sizes = [1.0] * len(tokens)
        for r in schedule:
            metric = []
            for tok in tokens:
                m = tok.reshape(groups, -1).mean(axis=0)
                metric.append(m / np.sqrt((m * m).sum()))
            a_ids = list(range(0, len(tokens), 2))
            b_ids = list(range(1, len(tokens), 2))
            best = {}
            for a in a_ids:
                sims = [float(metric[a] @ metric[b]) for b in b_ids]
                j = int(np.argmax(sims))
                best[a] = (sims[j], b_ids[j])
            order = sorted(a_ids, key=lambda a: -best[a][0])
            merged, kept = order[:r], order[r:]
            new_b = {b: (tokens[b] * sizes[b], sizes[b]) for b in b_ids}
            for a in merged:
                b = best[a][1]
                total, size = new_b[b]
                new_b[b] = (total + tokens[a] * sizes[a], size + sizes[a])
            new_tokens = [tokens[a] for a in kept]
            new_sizes = [sizes[a] for a in kept]
            for b in b_ids:
                total, size = new_b[b]
                new_tokens.append(total / size)
                new_sizes.append(size)
            tokens, sizes = new_tokens, new_sizes
        out.append(np.stack(tokens))
    return np.stack(out)


@pytest.mark.parametrize(("clips", "p0", "c"), [(3, 144, 64), (1, 784, 32), (2, 100, 48)])
def test_tome_matches_loop_reference(clips: int, p0: int, c: int) -> None:
    gen = torch.Generator().manual_seed(p0)
    x = torch.randn(clips, p0, c, generator=gen, dtype=torch.float64)
    schedule = merge_schedule(p0, 64)
    got = tome_compress(x, schedule, groups=16)
    expected = reference_tome_loop(x.numpy(), schedule, groups=16)
    assert got.shape == (clips, 64, c)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)


def test_tome_batch_is_per_clip() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 144, 64, generator=gen)
    together = tome_compress(x, [72, 8])
    alone = torch.cat([tome_compress(x[i : i + 1], [72, 8]) for i in range(4)])
    torch.testing.assert_close(together, alone, rtol=0, atol=0)


def test_hand_computed_order() -> None:
    """Metric = features (1 group); scores t0->t1 0.995, t2->t3 0.981, t4->t1 0.839."""
    x = torch.tensor(
        [[[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.2, 1.0], [1.0, 0.8], [-1.0, 0.0]]],
        dtype=torch.float64,
    )
    one = tome_compress(x, [1], groups=1)[0]
    expected_one = [[0.0, 1.0], [1.0, 0.8], [1.0, 0.05], [0.2, 1.0], [-1.0, 0.0]]
    torch.testing.assert_close(one, torch.tensor(expected_one, dtype=torch.float64))
    two = tome_compress(x, [2], groups=1)[0]
    expected_two = [[1.0, 0.8], [1.0, 0.05], [0.1, 1.0], [-1.0, 0.0]]
    torch.testing.assert_close(two, torch.tensor(expected_two, dtype=torch.float64))


def test_sizes_accumulate_across_steps() -> None:
    """After [t0->t1] then a merge into that token, its weight is 2 against the newcomer's 1."""
    x = torch.tensor([[[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.2, 1.0]]], dtype=torch.float64)
    merge, _ = bipartite_soft_matching(x, 1)
    y, size = merge_wavg(merge, x)
    assert size[0, :, 0].tolist() == [1.0, 2.0, 1.0]  # [t2, (t0+t1), t3]
    merge2, _ = bipartite_soft_matching(y, 1)  # evens [t2, t3] -> the single odd (t0+t1)
    z, size2 = merge_wavg(merge2, y, size)
    assert float(size2.sum()) == 4.0
    assert torch.allclose((z * size2).sum(1), x.sum(1))  # weighted mass is conserved


@pytest.mark.parametrize("r", [0, -3])
def test_identity_when_r_not_positive(r: int) -> None:
    x = torch.randn(2, 10, 16)
    merge, unmerge = bipartite_soft_matching(hd_metric(x), r)
    assert merge(x) is x
    assert unmerge(x) is x
    assert torch.equal(tome_compress(x, []), x)


def test_r_clamped_to_half() -> None:
    x = torch.randn(1, 10, 16)
    merge, _ = bipartite_soft_matching(hd_metric(x), 100)
    assert merge(x).shape == (1, 5, 16)


def test_unmerge_restores_positions() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 12, 16, generator=gen)
    merge, unmerge = bipartite_soft_matching(hd_metric(x), 4)
    y, _ = merge_wavg(merge, x)
    back = unmerge(y)
    assert back.shape == x.shape
    torch.testing.assert_close(back[:, 1::2], y[:, 2:])  # dst tokens back at odd positions
    # every even position holds either its own value (kept) or its destination's merged value
    kept = back[:, ::2]
    for i in range(2):
        for row in kept[i]:
            assert any(torch.allclose(row, cand) for cand in y[i])


def test_hd_metric_groups() -> None:
    x = torch.arange(2 * 3 * 1024, dtype=torch.float64).reshape(2, 3, 1024)
    m = hd_metric(x, 16)
    assert m.shape == (2, 3, 64)
    assert m[1, 2, 5] == x[1, 2, 5::64].mean()
