"""Golden vectors: small alignments checked by hand (spec: Vectors)."""

from __future__ import annotations

import numpy as np
import pytest

from moekit.conformance import adapters as caps
from moekit.conformance.checks import call_repr, compare_align

SPEC_IDS = np.array([[2, 3, 4], [1, 2, 4], [1, 3, 4], [1, 2, 3]], dtype=np.int32)
MAP_IDS = np.array([[0, 1], [2, 3], [1, 2]], dtype=np.int32)
MAP = np.array([-1, 0, 1, -1], dtype=np.int32)

GOLDEN = {
    "spec-1-five-experts": (
        dict(topk_ids=SPEC_IDS, block_size=4, num_experts=5),
        ([3, 6, 9, 12, 0, 4, 10, 12, 1, 7, 11, 12, 2, 5, 8, 12] + [12] * 11,
         [1, 2, 3, 4, -1, -1, -1], [16]),
    ),
    "spec-1-four-experts-id-4-invalid": (
        dict(topk_ids=SPEC_IDS, block_size=4, num_experts=4),
        ([3, 6, 9, 12, 0, 4, 10, 12, 1, 7, 11, 12] + [12] * 12, [1, 2, 3, -1, -1, -1], [12]),
    ),
    "expert-map-local-layout": (
        dict(topk_ids=MAP_IDS, block_size=2, num_experts=4, expert_map=MAP,
             ignore_invalid_experts=True),
        ([1, 4, 2, 5] + [6] * 6, [0, 1, -1, -1, -1], [4]),
    ),
    "expert-map-global-layout": (
        dict(topk_ids=MAP_IDS, block_size=2, num_experts=4, expert_map=MAP),
        ([0, 6, 1, 4, 2, 5, 3, 6, 6, 6], [-1, 0, 1, -1, -1], [8]),
    ),
    "pad-sorted-ids": (
        dict(topk_ids=np.array([[0, 1, 1]], dtype=np.int32), block_size=4, num_experts=2,
             pad_sorted_ids=True),
        ([0, 3, 3, 3, 1, 2, 3, 3] + [3] * 4, [0, 1, -1], [8]),
    ),
    "zero-tokens": (
        dict(topk_ids=np.zeros((0, 8), dtype=np.int32), block_size=4, num_experts=4),
        ([], [], [0]),
    ),
    "all-invalid": (
        dict(topk_ids=np.array([[-1, 9], [5, -3]], dtype=np.int32), block_size=2, num_experts=3),
        ([4] * 7, [-1] * 4, [0]),
    ),
}  # fmt: skip


def golden_expected(case: str) -> tuple[np.ndarray, ...]:
    return tuple(np.array(v, dtype=np.int32) for v in GOLDEN[case][1])


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_golden_alignment(adapter, case):
    args = GOLDEN[case][0]
    if "expert_map" in args and caps.EXPERT_MAP not in adapter.capabilities:
        pytest.skip(f"{adapter.name} lacks capability {caps.EXPERT_MAP}")
    got = adapter.moe_align_block_size(**args)
    compare_align(
        golden_expected(case),
        got,
        args["block_size"],
        ordered=caps.DETERMINISTIC_ORDER in adapter.capabilities,
        reproduce=call_repr("moe_align_block_size", args),
    )


@pytest.mark.requires(caps.SCATTER_IDX, caps.EXPERT_MAP)
def test_golden_scatter_idx(adapter):
    args = dict(topk_ids=MAP_IDS, block_size=2, num_experts=4, expert_map=MAP,
                ignore_invalid_experts=True, return_scatter_idx=True)  # fmt: skip
    got = adapter.moe_align_block_size(**args)
    want = np.array([[-1], [0], [2], [-1], [1], [3]], dtype=np.int32)
    compare_align(
        (*golden_expected("expert-map-local-layout"), want),
        got,
        2,
        ordered=caps.DETERMINISTIC_ORDER in adapter.capabilities,
        reproduce=call_repr("moe_align_block_size", args),
    )


@pytest.mark.requires(caps.BATCHED_ALIGN)
def test_golden_batched_alignment(adapter):
    args = dict(max_tokens_per_batch=8, block_size=4,
                expert_num_tokens=np.array([2, 3, 0, 6, 8], dtype=np.int32))  # fmt: skip
    want = (
        np.array([0, 1, 40, 40, 8, 9, 10, 40, 24, 25, 26, 27, 28, 29, 40, 40,
                  32, 33, 34, 35, 36, 37, 38, 39] + [40] * 16, dtype=np.int32),
        np.array([0, 1, 3, 3, 4, 4, -1, -1, -1, -1], dtype=np.int32),
        np.array([24], dtype=np.int32),
    )  # fmt: skip
    got = adapter.batched_moe_align_block_size(**args)
    compare_align(want, got, 4, ordered=True,
                  reproduce=call_repr("batched_moe_align_block_size", args))  # fmt: skip
