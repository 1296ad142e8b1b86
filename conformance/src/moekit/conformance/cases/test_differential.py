"""Differential checks against moekit.reference: seeded inputs, exact integers, float tolerances."""

from __future__ import annotations

import numpy as np
import pytest

from moekit.conformance import adapters as caps
from moekit.conformance import generators as gen
from moekit.conformance.adapters import ReferenceAdapter
from moekit.conformance.checks import assert_close, call_repr, compare_align

REFERENCE = ReferenceAdapter()

# (num_tokens, top_k, num_experts, block_size): tiny, odd, decode-like, and a large prefill.
SIZES = [(1, 1, 1, 1), (3, 2, 5, 4), (7, 3, 64, 16), (64, 8, 256, 16), (200, 6, 33, 64),
         (1024, 8, 256, 64)]  # fmt: skip
MAP_MODES = ["none", "local", "global"]


@pytest.mark.parametrize("ids_dtype", ["int32", "int64"])
@pytest.mark.parametrize("map_mode", MAP_MODES)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_align_matches_reference(adapter, ids_dtype, map_mode, size):
    if ids_dtype == "int64" and caps.INT64_IDS not in adapter.capabilities:
        pytest.skip(f"{adapter.name} lacks capability {caps.INT64_IDS}")
    if map_mode != "none" and caps.EXPERT_MAP not in adapter.capabilities:
        pytest.skip(f"{adapter.name} lacks capability {caps.EXPERT_MAP}")
    num_tokens, top_k, num_experts, block_size = size
    seed = gen.stable_seed(ids_dtype, map_mode, size)
    args: dict = dict(
        topk_ids=gen.topk_ids(seed, num_tokens, top_k, num_experts, skew=1.2,
                              invalid_fraction=0.05, dtype=ids_dtype),
        block_size=block_size,
        num_experts=num_experts,
    )  # fmt: skip
    if map_mode != "none":
        args["expert_map"] = gen.expert_map(seed, num_experts, max(1, num_experts // 2))
        args["ignore_invalid_experts"] = map_mode == "local"
    if caps.SCATTER_IDX in adapter.capabilities:
        args["return_scatter_idx"] = True
    reproduce = call_repr("moe_align_block_size", args) + f"  # seed={seed}"
    compare_align(
        REFERENCE.moe_align_block_size(**args),
        adapter.moe_align_block_size(**args),
        block_size,
        ordered=caps.DETERMINISTIC_ORDER in adapter.capabilities,
        reproduce=reproduce,
    )


@pytest.mark.requires(caps.BATCHED_ALIGN)
@pytest.mark.parametrize("seed", range(6))
def test_batched_align_matches_reference(adapter, seed):
    rng = np.random.default_rng(seed)
    max_tokens = int(rng.integers(1, 40))
    args = dict(
        max_tokens_per_batch=max_tokens,
        block_size=int(rng.choice([1, 4, 16, 64])),
        expert_num_tokens=rng.integers(0, max_tokens + 1, int(rng.integers(0, 33))).astype(
            np.int32
        ),
    )
    compare_align(
        REFERENCE.batched_moe_align_block_size(**args),
        adapter.batched_moe_align_block_size(**args),
        args["block_size"],
        ordered=True,
        reproduce=call_repr("batched_moe_align_block_size", args) + f"  # seed={seed}",
    )


def _float_dtypes():
    return [
        pytest.param("float32"),
        pytest.param("float16", marks=pytest.mark.requires(caps.FLOAT16)),
        pytest.param("bfloat16", marks=pytest.mark.requires(caps.BFLOAT16)),
    ]


@pytest.mark.requires(caps.MOE_SUM)
@pytest.mark.parametrize("dtype", _float_dtypes())
@pytest.mark.parametrize("with_ids", ["no-ids", "ids", "ids+map"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 3, 17), (33, 8, 300)], ids=str)
def test_moe_sum_matches_reference(adapter, dtype, with_ids, shape):
    num_tokens, top_k, hidden = shape
    seed = gen.stable_seed(dtype, with_ids, shape)
    x = gen.floats(seed, shape)
    args: dict = {"input": x}
    if with_ids != "no-ids":
        args["topk_ids"] = gen.topk_ids(seed, num_tokens, top_k, 16, invalid_fraction=0.2)
        args["topk_ids"] = np.where(args["topk_ids"] >= 16, -1, args["topk_ids"])
    if with_ids == "ids+map":
        args["expert_map"] = gen.expert_map(seed, 16, 6)
    want = REFERENCE.moe_sum(**args, dtype=dtype)
    got = adapter.moe_sum(**args, dtype=dtype)
    assert_close(want, got, dtype, call_repr("moe_sum", {**args, "dtype": dtype}))


@pytest.mark.requires(caps.COUNT_TOKENS)
@pytest.mark.parametrize("map_mode", ["none", "map"])
@pytest.mark.parametrize("size", [(0, 4, 8), (9, 2, 8), (300, 8, 64), (1000, 8, 256)], ids=str)
def test_count_expert_num_tokens_matches_reference(adapter, map_mode, size):
    num_tokens, top_k, num_experts = size
    seed = gen.stable_seed(map_mode, size)
    args: dict = dict(
        topk_ids=gen.topk_ids(seed, num_tokens, top_k, num_experts, invalid_fraction=0.1),
        num_local_experts=num_experts,
    )
    if map_mode == "map":
        args["expert_map"] = gen.expert_map(seed, num_experts, num_experts // 2)
        args["num_local_experts"] = num_experts // 2
    want = REFERENCE.count_expert_num_tokens(**args)
    got = adapter.count_expert_num_tokens(**args)
    compare_align((want,), (got,), 1, ordered=True, names=("counts",),
                  reproduce=call_repr("count_expert_num_tokens", args))  # fmt: skip


@pytest.mark.requires(caps.PERMUTE)
@pytest.mark.parametrize("dtype", _float_dtypes())
@pytest.mark.parametrize("map_mode", ["none", "map"])
@pytest.mark.parametrize("size", [(0, 2, 4, 8), (1, 1, 1, 3), (37, 4, 16, 70), (256, 8, 64, 32)],
                         ids=str)  # fmt: skip
def test_permute_unpermute_match_reference(adapter, dtype, map_mode, size):
    num_tokens, top_k, num_experts, hidden = size
    seed = gen.stable_seed(dtype, map_mode, size)
    args: dict = dict(
        hidden_states=gen.floats(seed, (num_tokens, hidden)).astype(np.float32),
        topk_ids=gen.topk_ids(seed, num_tokens, top_k, num_experts, invalid_fraction=0.1),
        num_experts=num_experts,
    )
    if map_mode == "map":
        args["expert_map"] = gen.expert_map(seed, num_experts, max(1, num_experts // 3))
        args["num_local_experts"] = max(1, num_experts // 3)
    reproduce = call_repr("moe_permute", args)
    want = REFERENCE.moe_permute(**args)
    got = adapter.moe_permute(**args)
    compare_align(
        want[1:],
        got[1:],
        1,
        ordered=True,
        reproduce=reproduce,
        names=("expert_first_token_offset", "inv_permuted_idx", "permuted_idx"),
    )
    assert_close(want[0].astype(np.float64), got[0], "float32", reproduce, "permuted")

    weights = gen.floats(seed + 1, (num_tokens, top_k), scale=1.0).astype(np.float32)
    expert_out = gen.floats(seed + 2, (num_tokens * top_k, hidden))
    args = dict(permuted=expert_out, topk_weights=weights, inv_permuted_idx=want[2],
                expert_first_token_offset=want[1])  # fmt: skip
    assert_close(
        REFERENCE.moe_unpermute(**args, dtype=dtype),
        adapter.moe_unpermute(**args, dtype=dtype),
        dtype,
        call_repr("moe_unpermute", {**args, "dtype": dtype}),
    )
