"""``TAIL_M``: a program also computes the first rows of the next m-tile when that is its
expert's short last one (see ``_triton_impl/tail_fold.py``). Outputs start poisoned, so a folded
tile whose rows nobody computes shows up as NaN, and one computed twice with the wrong rows as a
wrong value."""

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

# Slots per expert with 32-row tiles and 16-row tails: 40 (a tail of 8 folds), 48 (a tail of
# exactly 16 folds), 49 (17 rows: no fold), 32 (one full tile), 5 (one short tile, nothing
# before it to fold into), 80 (its third tile folds into its second). With whole-tile (32-row)
# tails, expert 2's second tile folds too.
COUNTS = (40, 48, 49, 32, 5, 80)
FOLDED_TILES = {16: [1, 3, 10], 32: [1, 3, 5, 10]}


def routing_with_counts(counts: tuple[int, ...], top_k: int, seed: int) -> np.ndarray:
    """``topk_ids [sum(counts) / top_k, top_k]`` giving expert ``e`` exactly ``counts[e]``
    slots, each token's experts distinct (no expert holds more slots than there are tokens),
    tokens in a random order."""
    labels = np.repeat(np.arange(len(counts)), counts)
    num_tokens = labels.size // top_k
    assert labels.size == num_tokens * top_k and max(counts) <= num_tokens
    ids = labels.reshape(top_k, num_tokens).T  # token t takes labels t, t + n, ...: distinct
    return ids[np.random.default_rng(seed).permutation(num_tokens)].astype(np.int32)


def folded_tiles(topk_ids: np.ndarray, num_experts: int, block_m: int, tail_m: int) -> list[int]:
    """The m-tiles whose rows the previous tile's program computes, from the alignment: an
    expert's last tile whose live rows fit in ``tail_m`` (every last tile when ``tail_m`` is
    ``block_m``)."""
    sorted_ids, expert_ids, _ = moe_align_block_size(
        torch.tensor(topk_ids), block_m, num_experts, backend="torch"
    )
    experts = [*expert_ids.tolist(), -1]
    folded = []
    for q in range(1, len(experts) - 1):
        tile_rows = sorted_ids[q * block_m : (q + 1) * block_m]
        rows = int((tile_rows < topk_ids.size).sum())
        is_last = experts[q + 1] != experts[q]
        if experts[q] >= 0 and experts[q] == experts[q - 1] and is_last and rows <= tail_m:
            folded.append(q)
    return folded


VARIANTS = {
    "slot-rows": {},
    "gemm1-only": {"TAIL_M2": 0},
    "gemm2-only": {"TAIL_M": 0},
    "sorted-rows": {"SORTED_ROWS": True},
    "sorted-rows-tma": {"SORTED_ROWS": True, "B_TMA": True},
    # GEMM1 leaves the folded tiles' padding rows unwritten (NaN here); GEMM2 reads whole tiles,
    # and those rows must stay in the rows it masks
    "sorted-rows-gemm1-only": {"SORTED_ROWS": True, "TAIL_M2": 0},
    "expert-groups": {"EXPERT_GROUPS": True, "GROUP_M": 2},
    "gemm2-own-tile": {"BLOCK_N2": 16, "BLOCK_K2": 16},
    # the tails' products transposed: weight tile as the MMA's M operand, tail rows as N
    "swapped": {"TAIL_SWAP": True},
    "swapped-sorted-rows-tma": {"TAIL_SWAP": True, "SORTED_ROWS": True, "B_TMA": True},
    "swapped-gemm2-own-tile": {"TAIL_SWAP": True, "TAIL_M": 0, "BLOCK_N2": 16, "BLOCK_K2": 16},
    # whole-tile tails: an expert's last tile folds whatever its rows
    "whole-tile": {"TAIL_M": 32, "TAIL_M2": 32},
    "whole-tile-swapped": {"TAIL_M": 32, "TAIL_M2": 32, "TAIL_SWAP": True},
    "whole-tile-gemm2-swapped-sorted-rows-tma": {
        "TAIL_M2": 32,
        "TAIL_SWAP": True,
        "SORTED_ROWS": True,
        "B_TMA": True,
    },
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("activation", ["silu", "swigluoai", "gelu_no_mul"])
def test_folded_tails_match_the_reference(monkeypatch, variant, activation):
    from moekit.experts._triton_impl.configs import GemmConfig

    tile = dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, num_stages=1, TAIL_M=16, TAIL_M2=16)
    config = GemmConfig(**tile | VARIANTS[variant])
    use_config(monkeypatch, config)
    seed = zlib.crc32(f"tail-fold{variant}{activation}".encode())
    top_k = 2
    problem = make_problem(seed, sum(COUNTS) // top_k, len(COUNTS), top_k, 48, 40, activation,
                           bias=True)  # fmt: skip
    problem["topk_ids"] = routing_with_counts(COUNTS, top_k, seed)
    # experts 0, 1 and 5 fold a tail (tiles 1, 3 and 10); expert 2's 17 rows only a whole tile
    for tail_m in {config.TAIL_M, config.TAIL_M2} - {0}:
        folded = folded_tiles(problem["topk_ids"], len(COUNTS), 32, tail_m)
        assert folded == FOLDED_TILES[tail_m], seed
    assert_matches(run(problem, torch.float32, "triton"), reference(problem, torch.float32),
                   torch.float32, seed)  # fmt: skip
    # one token takes tiles from topk_ids (16 rows each), where the tails do not apply
    one = make_problem(seed, 1, len(COUNTS), top_k, 48, 40, activation, bias=True)
    assert_matches(run(one, torch.float32, "triton"), reference(one, torch.float32),
                   torch.float32, seed)  # fmt: skip


@pytest.mark.parametrize("tail_m", [16, 32])
@pytest.mark.parametrize("weighted", [False, True])
def test_grouped_gemm_never_folds_remote_blocks(weighted, tail_m):
    """With ``ignore_invalid_experts=False`` a remote expert's segment is a run of ``-1`` blocks,
    which are written as zeros and never folded: if its short last block were, nobody would
    write its rows."""
    from moekit.experts._triton_impl.configs import GemmConfig
    from moekit.experts._triton_impl.grouped_gemm import invoke_grouped_gemm
    from moekit.experts._triton_impl.tile_source import TileSource

    seed = zlib.crc32(f"tail-fold-remote{weighted}{tail_m}".encode())
    rng = np.random.default_rng(seed)
    counts, top_k, n, k = (40, 40, 20, 36, 12, 0), 2, 40, 48
    expert_map = np.array([0, -1, 1, 2, -1, 3], dtype=np.int32)  # experts 1 and 4 are remote
    ids = routing_with_counts(counts, top_k, seed)
    num_slots = ids.size
    a = rng.standard_normal((num_slots, k)).astype(np.float32) / 10
    b = rng.standard_normal((4, n, k)).astype(np.float32) / 10
    bias = rng.standard_normal((4, n)).astype(np.float32) / 10
    weights = rng.random(num_slots).astype(np.float32)
    tiles = TileSource(*moe_align_block_size(
        torch.tensor(ids), 32, len(counts), torch.tensor(expert_map),
        ignore_invalid_experts=False, backend="torch",
    ))  # fmt: skip
    assert tiles.expert_ids[:4].tolist() == [0, 0, -1, -1], seed  # expert 1's tail is remote
    c = torch.full((num_slots, n), float("nan"))
    config = GemmConfig(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, num_stages=1, TAIL_M=tail_m)
    invoke_grouped_gemm(torch.tensor(a), torch.tensor(b), c, torch.tensor(bias),
                        torch.tensor(weights) if weighted else None, tiles, 1, config)  # fmt: skip

    want = grouped_gemm_reference(a, b, bias, weights if weighted else None,
                                  expert_map[ids.reshape(-1)])  # fmt: skip
    tol = TOLERANCE[torch.float32]
    np.testing.assert_allclose(c.numpy(), want, atol=tol, rtol=tol, err_msg=f"seed={seed}")


@pytest.mark.parametrize("field", ["TAIL_M", "TAIL_M2"])
@pytest.mark.parametrize(("tail_m", "block_m"), [(8, 32), (24, 32), (48, 64), (64, 32), (128, 64)])
def test_tail_m_must_be_a_power_of_two_up_to_the_tile(field, tail_m, block_m):
    from moekit.experts._triton_impl.configs import GemmConfig

    with pytest.raises(ValueError, match=f"{field}: "):
        GemmConfig(BLOCK_M=block_m, BLOCK_N=32, BLOCK_K=32, **{field: tail_m})
    assert getattr(GemmConfig(BLOCK_M=block_m, BLOCK_N=32, BLOCK_K=32, **{field: block_m}),
                   field) == block_m  # a whole tile  # fmt: skip


def test_gemm2_takes_its_own_tail():
    from moekit.experts._triton_impl.configs import GemmConfig

    config = GemmConfig(BLOCK_M=64, BLOCK_N=32, BLOCK_K=32, TAIL_M=16, TAIL_M2=32)
    assert (config.gemm2().TAIL_M, config.gemm2().TAIL_M2) == (32, 0)
    assert GemmConfig(BLOCK_M=64, BLOCK_N=32, BLOCK_K=32, TAIL_M=16).gemm2().TAIL_M == 0


def test_a_shorter_block_m_drops_the_tails_that_no_longer_fit():
    from moekit.experts._triton_impl.configs import GemmConfig

    config = GemmConfig(BLOCK_M=128, BLOCK_N=32, BLOCK_K=32, TAIL_M=64, TAIL_M2=32)
    assert (config.with_block_m(64).TAIL_M, config.with_block_m(64).TAIL_M2) == (64, 32)
    assert (config.with_block_m(32).TAIL_M, config.with_block_m(32).TAIL_M2) == (0, 32)
    assert (config.with_block_m(16).TAIL_M, config.with_block_m(16).TAIL_M2) == (0, 0)
    assert config.with_block_m(256).TAIL_M == 64
