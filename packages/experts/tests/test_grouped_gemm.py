"""The grouped GEMM launcher on its own: every placed slot against NumPy, and blocks of experts
not on this rank (``expert_ids`` of ``-1``, which ``TritonExperts`` never produces since its
alignment drops those slots) written as zeros."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from helpers import TOLERANCE, grouped_gemm_reference

from moekit.align import moe_align_block_size


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("expert_groups", [False, True])
def test_grouped_gemm_writes_every_slot_and_zeros_for_remote_experts(weighted, expert_groups):
    from moekit.experts._triton_impl.configs import GemmConfig
    from moekit.experts._triton_impl.grouped_gemm import invoke_grouped_gemm
    from moekit.experts._triton_impl.tile_source import TileSource

    seed = zlib.crc32(f"grouped{weighted}".encode())
    rng = np.random.default_rng(seed)
    num_tokens, top_k, num_experts, n, k = 23, 2, 6, 40, 48
    expert_map = np.array([0, -1, 1, 2, -1, 3], dtype=np.int32)  # experts 1 and 4 are remote
    ids = np.stack([rng.permutation(num_experts)[:top_k] for _ in range(num_tokens)])
    a = rng.standard_normal((num_tokens * top_k, k)).astype(np.float32) / 10
    b = rng.standard_normal((4, n, k)).astype(np.float32) / 10
    bias = rng.standard_normal((4, n)).astype(np.float32) / 10
    weights = rng.random(num_tokens * top_k).astype(np.float32)
    tiles = TileSource(*moe_align_block_size(
        torch.tensor(ids, dtype=torch.int32), 16, num_experts, torch.tensor(expert_map),
        ignore_invalid_experts=False, backend="torch",
    ))  # fmt: skip
    assert (tiles.expert_ids[: int(tiles.num_tokens_post_padded) // 16] == -1).any(), (
        f"the routing left no remote block to write zeros for, seed={seed}"
    )
    c = torch.full((num_tokens * top_k, n), float("nan"))
    # with EXPERT_GROUPS the runs of -1 blocks (remote experts, and past the used range) are
    # groups too
    config = GemmConfig(BLOCK_M=16, BLOCK_N=32, BLOCK_K=32, num_stages=1, GROUP_M=2,
                        EXPERT_GROUPS=expert_groups)  # fmt: skip
    invoke_grouped_gemm(torch.tensor(a), torch.tensor(b), c, torch.tensor(bias),
                        torch.tensor(weights) if weighted else None, tiles, 1, config)  # fmt: skip

    want = grouped_gemm_reference(a, b, bias, weights if weighted else None,
                                  expert_map[ids.reshape(-1)])  # fmt: skip
    np.testing.assert_allclose(c.numpy(), want, atol=TOLERANCE[torch.float32], rtol=TOLERANCE[torch.float32],
                               err_msg=f"seed={seed}")  # fmt: skip
