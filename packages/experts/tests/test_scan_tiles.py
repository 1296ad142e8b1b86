"""The decode path whose GEMMs scan ``topk_ids`` for their tiles and whose GEMM2 sums the top-k
slots itself: against the reference where the scanning grid planned too few tiles for an expert,
where tokens have no local slot at all, and against the aligned path, which must give the same
numbers."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from helpers import assert_matches, make_problem, reference, run, use_config

MAP = np.array([-1, 0, 1, -1, 2, 3, -1, -1], dtype=np.int32)  # 8 global, 4 local


@pytest.fixture
def small_tiles(monkeypatch):
    from moekit.experts._triton_impl.configs import GemmConfig

    use_config(monkeypatch, GemmConfig(BLOCK_M=16, BLOCK_N=32, BLOCK_K=32, GROUP_M=4,
                                       num_stages=1))  # fmt: skip


def use_scan(monkeypatch, on: bool) -> None:
    from moekit.experts import triton_experts

    monkeypatch.setattr(triton_experts, "SCAN_MAX_SLOTS", 2048 if on else 0)


@pytest.mark.parametrize("scan", [True, False], ids=["scan", "aligned"])
@pytest.mark.parametrize("duplicates", [False, True], ids=["distinct", "duplicate-ids"])
def test_an_expert_with_more_slots_than_planned(monkeypatch, small_tiles, scan, duplicates):
    """Every token sends slot 0 to one expert (with ``duplicates`` slot 1 too): that expert gets
    40 or 80 slots, more than the 3 tiles of 16 the scanning grid plans from the mean share, so
    its programs must take several tiles in turn."""
    from moekit.experts import triton_experts

    use_scan(monkeypatch, scan)
    seed = zlib.crc32(f"skew{duplicates}".encode())
    problem = make_problem(seed, 40, 4, 2, 48, 24, "silu", bias=True)
    problem["topk_ids"][:, 0] = 2
    if duplicates:
        problem["topk_ids"][:, 1] = 2
    problem["topk_ids"][1, 0] = -1
    assert triton_experts.scan_m_tiles(40, 80, 4, 16) == 3
    assert_matches(run(problem, torch.float32, "triton"), reference(problem, torch.float32),
                   torch.float32, seed)  # fmt: skip


@pytest.mark.parametrize("num_tokens", [1, 2, 6, 37])
def test_tokens_without_a_local_slot_are_zero(monkeypatch, small_tiles, num_tokens):
    """Slots of remote experts and ``-1`` slots are skipped; a token left with none gets zeros
    (the output starts as NaN), and the others the sum of their local slots."""
    use_scan(monkeypatch, True)
    seed = zlib.crc32(f"unrouted{num_tokens}".encode())
    problem = make_problem(seed, num_tokens, 4, 3, 40, 24, "gelu", expert_map=MAP)
    problem["topk_ids"][0] = [0, 3, -1]  # remote, remote, skipped
    if num_tokens > 2:
        problem["topk_ids"][2] = [-1, -1, -1]
    got = run(problem, torch.float32, "triton")
    assert (got[0] == 0).all(), f"seed={seed}"
    assert_matches(got, reference(problem, torch.float32), torch.float32, seed)


@pytest.mark.parametrize("activation", ["silu", "swigluoai"])
@pytest.mark.parametrize("num_tokens", [3, 16, 50])
def test_scan_and_aligned_paths_agree(monkeypatch, small_tiles, activation, num_tokens):
    """Both paths compute each slot row from the same rows in the same order and sum the slots
    in slot order, so they agree to rounding (the GPU test checks they are bit-identical)."""
    seed = zlib.crc32(f"agree{activation}{num_tokens}".encode())
    problem = make_problem(seed, num_tokens, 6, 4, 40, 24, activation, bias=True)
    results = {}
    for scan in (True, False):
        use_scan(monkeypatch, scan)
        results[scan] = run(problem, torch.float32, "triton")
    assert_matches(results[True], results[False].double().numpy(), torch.float32, seed)
    assert_matches(results[True], reference(problem, torch.float32), torch.float32, seed)
