"""Up to four tokens whose slots number at most a quarter of the local experts skip the
alignment pass: each slot is its own tile, and GEMM2 sums the top-k slots itself. Against the
aligned path, bit for bit, and against the reference, with skipped, remote and repeated experts,
experts shared between tokens, and a token with no local slot."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from helpers import assert_matches, make_problem, reference, run, use_config

MAP = np.array([-1, 0, 1, -1, 2, 3, -1, -1], dtype=np.int32)  # 8 global, 4 local
IDS = {  # three tokens' 4 slots, global ids
    "shared-and-unrouted": [[1, 4, 2, 5], [4, 1, -1, 0], [0, 3, -1, 7]],
    "repeated-within-and-across": [[4, 1, 4, 4], [2, 2, 5, 1], [5, 4, 2, 1]],
}


@pytest.mark.parametrize(
    ("num_tokens", "num_slots", "num_local", "want"),
    [(1, 8, 4, True), (2, 8, 32, True), (2, 8, 31, False), (4, 32, 128, True),
     (5, 20, 128, False), (2, 4, 8, False), (0, 0, 128, False)],
)  # fmt: skip
def test_which_calls_take_tiles_from_ids(num_tokens, num_slots, num_local, want):
    from moekit.experts.triton_experts import tiles_from_ids

    assert tiles_from_ids(num_tokens, num_slots, num_local) is want


@pytest.mark.parametrize("ids", IDS)
@pytest.mark.parametrize("block_n", [16, 32])  # 48 output columns: one or three n-tiles
def test_tiles_from_ids_match_the_aligned_path(monkeypatch, ids, block_n):
    from moekit.experts import triton_experts
    from moekit.experts._triton_impl.configs import GemmConfig

    use_config(monkeypatch, GemmConfig(BLOCK_M=16, BLOCK_N=block_n, BLOCK_K=32, num_stages=1))
    seed = zlib.crc32(f"small-batch{ids}{block_n}".encode())
    problem = make_problem(seed, 3, 4, 4, 48, 24, "silu", bias=True, expert_map=MAP)
    problem["topk_ids"][:] = IDS[ids]
    results = {}
    # 12 slots over 4 local experts: a share of 3 takes tiles from the ids, 0 the aligned path
    for share, fused in ((3.0, True), (3.0, False), (0.0, True)):
        monkeypatch.setattr(triton_experts, "IDS_TILES_MAX_SLOTS_PER_EXPERT", share)
        monkeypatch.setattr(triton_experts, "FUSED_TOPK_SUM", fused)
        results[share, fused] = run(problem, torch.float32, "triton")
    aligned = results[0.0, True]
    if ids == "shared-and-unrouted":
        assert (results[3.0, True][2] == 0).all(), f"seed={seed}"
    for key, got in results.items():
        assert torch.equal(got, aligned), f"{key} seed={seed}"
    assert_matches(aligned, reference(problem, torch.float32), torch.float32, seed)


def test_gemm1_lets_gemm2_start_early_from_about_one_wave(monkeypatch):
    """GEMM2's programs with rows, counted as the rule says, against four per SM (132 SMs)."""
    import torch

    from moekit.experts import triton_experts

    monkeypatch.setattr(triton_experts, "sm_count", lambda device: 132)
    cuda = torch.device("cuda")
    # one token of Mixtral (2 slots x 32 n-tiles) and of DeepSeek-V3 (8 slots x 112 n-tiles)
    assert not triton_experts.gemm2_starts_early(2, 8, True, 16, 32, cuda)
    assert triton_experts.gemm2_starts_early(8, 256, True, 16, 112, cuda)
    # aligned: min(slots, experts) + slots // BLOCK_M m-tiles; 528 programs is the threshold
    assert not triton_experts.gemm2_starts_early(512, 8, False, 64, 32, cuda)  # 16 x 32
    assert triton_experts.gemm2_starts_early(128, 128, False, 16, 4, cuda)  # 136 x 4
    assert not triton_experts.gemm2_starts_early(128, 128, False, 16, 3, cuda)  # 136 x 3
