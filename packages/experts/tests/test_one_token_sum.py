"""One token's call sums its top-k slots inside GEMM2 (per-n-tile arrival counters, slot order):
against the separate ``moe_sum`` launch it replaces, bit for bit, and against the reference, with
skipped, remote and repeated experts, and a token with no local slot at all."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from helpers import assert_matches, make_problem, reference, run, use_config

MAP = np.array([-1, 0, 1, -1, 2, 3, -1, -1], dtype=np.int32)  # 8 global, 4 local
IDS = {  # one token's 4 slots, global ids
    "distinct": [1, 4, 2, 5],
    "skipped-and-remote": [-1, 4, 0, 5],
    "repeated-expert": [4, 1, 4, 4],
    "no-local-slot": [0, 3, -1, 7],
}


@pytest.mark.parametrize("ids", IDS)
@pytest.mark.parametrize("block_n", [16, 32])  # 48 output columns: one or three n-tiles
def test_one_token_sum_in_gemm2(monkeypatch, ids, block_n):
    from moekit.experts import triton_experts
    from moekit.experts._triton_impl.configs import GemmConfig

    use_config(monkeypatch, GemmConfig(BLOCK_M=16, BLOCK_N=block_n, BLOCK_K=32, num_stages=1))
    seed = zlib.crc32(f"one-token{ids}{block_n}".encode())
    problem = make_problem(seed, 1, 4, 4, 48, 24, "silu", bias=True, expert_map=MAP)
    problem["topk_ids"][0] = IDS[ids]
    results = {}
    for fused in (True, False):
        monkeypatch.setattr(triton_experts, "FUSED_TOPK_SUM", fused)
        results[fused] = run(problem, torch.float32, "triton")
    if ids == "no-local-slot":
        assert (results[True] == 0).all(), f"seed={seed}"
    assert torch.equal(results[True], results[False]), f"seed={seed}"
    assert_matches(results[True], reference(problem, torch.float32), torch.float32, seed)
