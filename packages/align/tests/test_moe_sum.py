"""The Triton ``moe_sum`` adds a token's slots in float32 in slot order, bit for bit, under every
column split its launcher picks: compared with a NumPy model of that sum on seeded inputs."""

import numpy as np
import pytest
import torch

import moekit.align._triton_impl.reduce as launcher
from moekit.align import moe_sum

DTYPES = {torch.float16: np.float16, torch.float32: np.float32}


def slot_order_sum(values, keep):
    """``sum_j values[:, j]`` over kept slots, one float32 add at a time in slot order."""
    total = np.zeros((values.shape[0], values.shape[2]), dtype=np.float32)
    for j in range(values.shape[1]):
        total = total + np.where(keep[:, j, None], values[:, j].astype(np.float32), 0)
    return total


def local_slots(ids, expert_map):
    keep = ids >= 0
    if expert_map is not None:
        in_map = keep & (ids < expert_map.size)
        keep = in_map & (expert_map[np.where(in_map, ids, 0)] >= 0)
    return keep


@pytest.mark.parametrize("dtype", list(DTYPES), ids=str)
@pytest.mark.parametrize("seed", range(6))
def test_moe_sum_is_the_slot_order_sum(dtype, seed):
    rng = np.random.default_rng(seed)
    num_tokens = int(rng.choice([1, 3, 17, 70]))
    top_k = int(rng.choice([1, 2, 3, 8]))
    hidden = int(rng.choice([1, 37, 128, 300, 1100]))
    num_experts = 12
    values = rng.standard_normal((num_tokens, hidden, top_k)).astype(DTYPES[dtype])
    strided = torch.from_numpy(values).permute(0, 2, 1)  # [T, k, K], hidden not contiguous
    ids = rng.integers(-1, num_experts + 2, (num_tokens, top_k)).astype(np.int32)
    expert_map = np.where(rng.random(num_experts) < 0.6, np.arange(num_experts), -1)
    expert_map = expert_map.astype(np.int32)
    cases = [(None, None), (ids, None), (ids, expert_map)]
    for case_ids, case_map in cases:
        keep = np.ones((num_tokens, top_k), bool)
        if case_ids is not None:
            keep = local_slots(case_ids, case_map)
        want = slot_order_sum(values.transpose(0, 2, 1), keep).astype(DTYPES[dtype])
        for given in (strided, strided.contiguous()):
            out = torch.full((num_tokens, hidden), float("nan"), dtype=dtype)
            moe_sum(
                given,
                out,
                None if case_ids is None else torch.from_numpy(case_ids),
                None if case_map is None else torch.from_numpy(case_map),
                backend="triton",
            )
            same = np.array_equal(out.numpy(), want)
            assert same, (
                f"seed={seed} T={num_tokens} k={top_k} K={hidden} ids={case_ids is not None} "
                f"map={case_map is not None} contiguous={given.is_contiguous()}"
            )


@pytest.mark.parametrize("num_tokens", [1, 2, 16, 64, 256, 4096])
@pytest.mark.parametrize("hidden", [1, 300, 2048, 7168])
def test_sum_launch_spreads_few_tokens(num_tokens, hidden):
    block_h, num_warps = launcher.sum_launch(num_tokens, hidden)
    assert block_h & (block_h - 1) == 0 and block_h <= 1024
    assert num_warps & (num_warps - 1) == 0 and 1 <= num_warps <= max(1, block_h // 256)
    programs = num_tokens * -(-hidden // block_h)
    # Either enough programs, or the smallest tile, or one tile covering the row already.
    assert programs >= 256 or block_h == 128 or block_h >= hidden
    assert block_h == 1024 or block_h >= hidden or programs < 512, (num_tokens, hidden, block_h)
