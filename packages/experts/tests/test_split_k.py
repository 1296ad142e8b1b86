"""``SPLIT_K2``: GEMM2's aligned tiles run as several programs over parts of K, and the last of
them adds the float32 partial products in split order (see ``_triton_impl/split_k.py``).

The direct tests start from a NaN-poisoned output, so a tile that no split finishes shows up, and
they check that every split of every live tile arrived at its counter."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from helpers import (
    TOLERANCE,
    assert_matches,
    grouped_gemm_reference,
    make_problem,
    reference,
    run,
    use_config,
)

from moekit.align import moe_align_block_size

VARIANTS = {
    "plain": {},
    "expert-groups": {"EXPERT_GROUPS": True, "GROUP_M": 2},
    "sorted-rows-tma": {"SORTED_ROWS": True, "B_TMA": True},
    "gemm2-own-tile": {"BLOCK_N2": 16, "BLOCK_K2": 16},
    "gemm1-tail": {"TAIL_M": 16},  # GEMM1 folds its tails; the split GEMM2 does not
}


@pytest.mark.parametrize("split_k", [2, 3, 5])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_split_gemm2_matches_the_reference(monkeypatch, split_k, variant, dtype):
    from moekit.experts._triton_impl.configs import GemmConfig

    # K of GEMM2 is the intermediate size, 40: three 16-wide steps, so some splits get one step
    # and, with five, some get none
    tile = dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=16, num_stages=1, SPLIT_K2=split_k)
    use_config(monkeypatch, GemmConfig(**tile | VARIANTS[variant]))
    seed = zlib.crc32(f"split-k{split_k}{variant}{dtype}".encode())
    problem = make_problem(seed, 45, 6, 2, 48, 40, bias=True)
    got = run(problem, dtype, "triton")
    assert_matches(got, reference(problem, dtype), dtype, seed)
    assert torch.equal(got, run(problem, dtype, "triton")), f"not deterministic, seed={seed}"


def test_split_gemm2_with_remote_experts(monkeypatch):
    """Blocks of an expert on another rank are zeros (written by the first split alone)."""
    from moekit.experts._triton_impl.configs import GemmConfig

    use_config(monkeypatch, GemmConfig(BLOCK_M=16, BLOCK_N=32, BLOCK_K=16, num_stages=1,
                                       SPLIT_K2=2))  # fmt: skip
    seed = zlib.crc32(b"split-k-remote")
    expert_map = np.array([0, -1, 1, 2, -1, 3], dtype=np.int32)
    problem = make_problem(seed, 30, 4, 2, 32, 48, expert_map=expert_map)
    assert_matches(run(problem, torch.float32, "triton"), reference(problem, torch.float32),
                   torch.float32, seed)  # fmt: skip


@pytest.mark.parametrize("split_k", [2, 4])
@pytest.mark.parametrize("weighted", [False, True])
def test_grouped_gemm_split_finishes_every_tile(split_k, weighted):
    from moekit.experts._triton_impl.configs import GemmConfig
    from moekit.experts._triton_impl.grouped_gemm import invoke_grouped_gemm, split_state
    from moekit.experts._triton_impl.tile_source import TileSource

    seed = zlib.crc32(f"split-k-direct{split_k}{weighted}".encode())
    rng = np.random.default_rng(seed)
    num_experts, top_k, n, k = 5, 2, 40, 72  # n: a partial last n-tile; k: 5 steps of 16
    ids = np.stack([rng.permutation(num_experts)[:top_k] for _ in range(23)]).astype(np.int32)
    expert_map = np.array([0, 1, -1, 2, 3], dtype=np.int32)  # expert 2 is remote
    num_slots = ids.size
    a = rng.standard_normal((num_slots, k)).astype(np.float32) / 10
    b = rng.standard_normal((4, n, k)).astype(np.float32) / 10
    bias = rng.standard_normal((4, n)).astype(np.float32) / 10
    weights = rng.random(num_slots).astype(np.float32)
    config = GemmConfig(BLOCK_M=16, BLOCK_N=32, BLOCK_K=16, num_stages=1)
    tiles = TileSource(*moe_align_block_size(
        torch.tensor(ids), config.BLOCK_M, num_experts, torch.tensor(expert_map),
        ignore_invalid_experts=False, backend="torch",
    ))  # fmt: skip
    partials, counters, _ = split = split_state(tiles, n, config, split_k, torch.device("cpu"))
    partials.fill_(float("nan"))  # a split that adds a partial nobody stored shows up
    outs = []
    for _ in range(2):
        counters.zero_()  # GEMM1 does this in the path
        c = torch.full((num_slots, n), float("nan"))
        invoke_grouped_gemm(torch.tensor(a), torch.tensor(b), c, torch.tensor(bias),
                            torch.tensor(weights) if weighted else None, tiles, 1, config,
                            split=split)  # fmt: skip
        outs.append(c)

    want = grouped_gemm_reference(a, b, bias, weights if weighted else None,
                                  expert_map[ids.reshape(-1)])  # fmt: skip
    tol = TOLERANCE[torch.float32]
    np.testing.assert_allclose(outs[0].numpy(), want, atol=tol, rtol=tol, err_msg=f"seed={seed}")
    assert torch.equal(outs[0], outs[1]), f"not deterministic, seed={seed}"
    # every split of every live tile arrived once; remote and unused tiles count nothing
    num_n_tiles = -(-n // config.BLOCK_N)
    live = int(tiles.num_tokens_post_padded) // config.BLOCK_M
    local = (tiles.expert_ids[:live] >= 0).repeat_interleave(num_n_tiles)
    want_counts = torch.zeros_like(counters)
    want_counts[: local.numel()] = local.to(torch.int32) * split_k
    assert torch.equal(counters, want_counts), f"seed={seed}"


@pytest.mark.parametrize("fields", [{"SPLIT_K2": 1}, {"SPLIT_K2": -2},
                                    {"SPLIT_K2": 2, "TAIL_M2": 16}])  # fmt: skip
def test_split_k2_must_be_off_or_at_least_two_without_a_gemm2_tail(fields):
    from moekit.experts._triton_impl.configs import GemmConfig

    with pytest.raises(ValueError, match="SPLIT_K2"):
        GemmConfig(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, **fields)


def test_gemm2_keeps_its_split_and_tables_store_it_only_when_set():
    from moekit.experts._triton_impl.configs import GemmConfig

    config = GemmConfig(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, SPLIT_K2=3)
    assert config.gemm2().SPLIT_K2 == 3
    assert config.as_dict()["SPLIT_K2"] == 3
    assert "SPLIT_K2" not in GemmConfig(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32).as_dict()


def test_split_needs_aligned_tiles_and_big_enough_buffers():
    from moekit.experts._triton_impl.configs import GemmConfig
    from moekit.experts._triton_impl.grouped_gemm import invoke_grouped_gemm
    from moekit.experts._triton_impl.tile_source import TileSource

    a, b, c = torch.zeros(4, 16), torch.zeros(2, 16, 16), torch.zeros(4, 16)
    config = GemmConfig(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16)
    from_ids = TileSource(topk_ids=torch.zeros(4, dtype=torch.int32), num_global_experts=2)
    good = (torch.zeros(4 * 2 * 256), torch.zeros(4, dtype=torch.int32), 2)
    with pytest.raises(ValueError, match="aligned tiles"):
        invoke_grouped_gemm(a, b, c, None, None, from_ids, 1, config, split=good)
    aligned = TileSource(*moe_align_block_size(torch.tensor([[0], [1], [0], [1]], dtype=torch.int32), 16, 2,
                                               backend="torch"))  # fmt: skip
    with pytest.raises(ValueError, match="split_k_buffers"):
        invoke_grouped_gemm(a, b, c, None, None, aligned, 1, config,
                            split=(torch.zeros(8), good[1], 2))  # fmt: skip
