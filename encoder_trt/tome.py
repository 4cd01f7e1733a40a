"""Token merging of the `tome16_mlp_hd64` compressor (spec: reference/videochat_flash.md §2.2).

Pure functions, no module state: the schedule is computed once from the token count and passed in,
which keeps traced graphs (ONNX, TensorRT) static apart from the batch axis.

Shape letters: B clips, P current tokens per clip, C width, R tokens removed in a step,
A = ceil(P/2) even-position tokens ("src" side), Bt = floor(P/2) odd-position tokens ("dst").

Per step: metric = per-token mean over `groups` channel groups (16 groups of 64 channels for
UMT-L, "hd64"), L2-normalised; even tokens are matched to their most similar odd token; the R
best-scoring even tokens are folded into their match with a size-weighted average. The output
order is the reference's: unmerged even tokens in descending-score order, then every odd token
in its original relative order.

The weighted mean is written as scatter-add of (x*size) and of size, then a division:
ONNX exports `scatter_reduce(reduce="mean")` wrongly or not at all (environment notes §6).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

MergeFn = Callable[[torch.Tensor], torch.Tensor]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def merge_schedule(p0: int, target: int = 64) -> list[int]:
    """Tokens removed per step to go from p0 to `target` by halving, as the reference.

    224 video: 784 -> [392, 196, 98, 34]; 448 video: 3136 -> [1568, 784, 392, 196, 98, 34].
    Empty when p0 == target (nothing to merge); p0 < target cannot reach the target.
    """
    if target <= 0:
        raise ValueError(f"target must be positive, got {target}")
    if p0 < target:
        raise ValueError(f"cannot merge {p0} tokens up to {target}: need p0 >= target")
    schedule: list[int] = []
    p = p0
    while p != target:
        if p - target <= p // 2:
            schedule.append(p - target)
            break
        schedule.append(p // 2)
        p -= p // 2
    return schedule


def hd_metric(x: torch.Tensor, groups: int = 16) -> torch.Tensor:
    """(B, P, C) -> (B, P, C/groups): mean over `groups` contiguous channel groups."""
    b, p, c = x.shape
    return x.reshape(b, p, groups, c // groups).mean(dim=2)  # (B, P, C/groups)


def bipartite_soft_matching(metric: torch.Tensor, r: int) -> tuple[MergeFn, MergeFn]:
    """Match even tokens to odd tokens on cosine similarity; returns (merge, unmerge).

    `merge(x)` maps (B, P, K) -> (B, P - r, K) by summing each merged even token into its odd
    match (callers divide, see `merge_wavg`). `unmerge` maps back to (B, P, K) by copying. Both
    are the identity when r <= 0. r is clamped to floor(P/2) like the reference.
    """
    p = metric.shape[1]
    r = min(r, p // 2)
    if r <= 0:
        return _identity, _identity

    with torch.no_grad():
        metric = metric / metric.norm(dim=-1, keepdim=True)  # (B, P, M)
        a, b = metric[:, ::2, :], metric[:, 1::2, :]  # (B, A, M), (B, Bt, M)
        scores = a @ b.transpose(-1, -2)  # (B, A, Bt)
        node_max, node_idx = scores.max(dim=-1)  # (B, A), (B, A)
        edge_idx = node_max.argsort(dim=-1, descending=True).unsqueeze(-1)  # (B, A, 1)
        unm_idx = edge_idx[:, r:, :]  # (B, A - R, 1) kept even tokens, best score first
        src_idx = edge_idx[:, :r, :]  # (B, R, 1) even tokens that get merged
        dst_idx = node_idx.unsqueeze(-1).gather(dim=1, index=src_idx)  # (B, R, 1)

    def merge(x: torch.Tensor) -> torch.Tensor:
        src, dst = x[:, ::2, :], x[:, 1::2, :]  # (B, A, K), (B, Bt, K)
        n, t1, k = src.shape
        unm = src.gather(dim=1, index=unm_idx.expand(n, t1 - r, k))  # (B, A - R, K)
        moved = src.gather(dim=1, index=src_idx.expand(n, r, k))  # (B, R, K)
        dst = dst.scatter_reduce(1, dst_idx.expand(n, r, k), moved, reduce="sum")  # (B, Bt, K)
        return torch.cat([unm, dst], dim=1)  # (B, P - R, K)

    def unmerge(x: torch.Tensor) -> torch.Tensor:
        n, _, k = x.shape
        a_len = unm_idx.shape[1] + r
        unm, dst = x[:, : a_len - r, :], x[:, a_len - r :, :]  # (B, A - R, K), (B, Bt, K)
        src = dst.gather(dim=1, index=dst_idx.expand(n, r, k))  # (B, R, K)
        out = x.new_zeros(n, p, k)  # (B, P, K)
        out[:, 1::2, :] = dst
        evens = out[:, ::2, :].scatter(1, unm_idx.expand(n, a_len - r, k), unm)  # (B, A, K)
        evens = evens.scatter(1, src_idx.expand(n, r, k), src)  # (B, A, K)
        out[:, ::2, :] = evens
        return out

    return merge, unmerge


def merge_wavg(
    merge: MergeFn, x: torch.Tensor, size: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Size-weighted average merge: returns (merged x (B, P-R, C), merged size (B, P-R, 1)).

    Implemented as sum(x*size) / sum(size) so every backend sees only scatter-add.
    """
    if size is None:
        size = torch.ones_like(x[..., :1])  # (B, P, 1)
    total = merge(x * size)  # (B, P - R, C)
    size = merge(size)  # (B, P - R, 1)
    return total / size, size


def tome_compress(x: torch.Tensor, schedule: list[int], groups: int = 16) -> torch.Tensor:
    """Apply the merge schedule to every clip of the batch: (B, P0, C) -> (B, P0 - sum(r), C).

    The metric is recomputed each step from the current (already merged) features.
    """
    size: torch.Tensor | None = None
    for r in schedule:
        merge, _ = bipartite_soft_matching(hd_metric(x, groups), r)
        x, size = merge_wavg(merge, x, size)  # (B, P - R, C)
    return x
