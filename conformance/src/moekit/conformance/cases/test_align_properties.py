"""Properties of any alignment (spec rules), over hypothesis-drawn shapes and options."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from moekit.conformance import adapters as caps
from moekit.conformance import generators as gen
from moekit.conformance.checks import (
    ConformanceError,
    call_repr,
    check_align_invariants,
    layout_experts,
)


@st.composite
def alignment_problems(draw):
    num_experts = draw(st.integers(1, 40))
    args = dict(
        topk_ids=gen.topk_ids(
            draw(st.integers(0, 2**31 - 1)),
            draw(st.integers(0, 48)),
            draw(st.integers(1, 8)),
            num_experts,
            skew=draw(st.sampled_from([0.0, 1.5])),
            invalid_fraction=draw(st.sampled_from([0.0, 0.2])),
        ),
        block_size=draw(st.sampled_from([1, 2, 3, 4, 16, 64])),
        num_experts=num_experts,
        pad_sorted_ids=draw(st.booleans()),
    )
    map_mode = draw(st.sampled_from(["none", "local", "global"]))
    if map_mode != "none":
        num_local = draw(st.integers(1, num_experts))
        args["expert_map"] = gen.expert_map(draw(st.integers(0, 1000)), num_experts, num_local)
        args["ignore_invalid_experts"] = map_mode == "local"
    return args


@given(alignment_problems())
def test_alignment_invariants(adapter, problem):
    if "expert_map" in problem and caps.EXPERT_MAP not in adapter.capabilities:
        pytest.skip(f"{adapter.name} lacks capability {caps.EXPERT_MAP}")
    reproduce = call_repr("moe_align_block_size", problem)
    outputs = adapter.moe_align_block_size(**problem)
    check_align_invariants(
        problem["topk_ids"],
        problem["block_size"],
        problem["num_experts"],
        outputs,
        problem.get("expert_map"),
        problem.get("ignore_invalid_experts", False),
        reproduce,
    )


@pytest.mark.requires(caps.DETERMINISTIC_ORDER)
@given(alignment_problems())
def test_slots_ascend_inside_segments(adapter, problem):
    if "expert_map" in problem and caps.EXPERT_MAP not in adapter.capabilities:
        pytest.skip(f"{adapter.name} lacks capability {caps.EXPERT_MAP}")
    sorted_ids, _, post_pad = adapter.moe_align_block_size(**problem)[:3]
    numel = problem["topk_ids"].size
    segment_of_slot = layout_experts(
        problem["topk_ids"],
        problem["num_experts"],
        problem.get("expert_map"),
        problem.get("ignore_invalid_experts", False),
    )
    segment_slots: dict[int, list[int]] = {}
    for slot in sorted_ids[: int(post_pad[0])]:
        if slot != numel:
            segment_slots.setdefault(int(segment_of_slot[slot]), []).append(int(slot))
    for expert, slots in segment_slots.items():
        if slots != sorted(slots):
            raise ConformanceError(
                f"slots of expert {expert} are not ascending: {slots}",
                call_repr("moe_align_block_size", problem),
            )


@pytest.mark.requires(caps.SCATTER_IDX)
@given(alignment_problems())
def test_scatter_idx_inverts_sorted_ids(adapter, problem):
    if "expert_map" in problem and caps.EXPERT_MAP not in adapter.capabilities:
        pytest.skip(f"{adapter.name} lacks capability {caps.EXPERT_MAP}")
    sorted_ids, _, post_pad, scatter = adapter.moe_align_block_size(
        **problem, return_scatter_idx=True
    )
    numel = problem["topk_ids"].size
    reproduce = call_repr("moe_align_block_size", {**problem, "return_scatter_idx": True})
    if scatter.shape != (numel, 1):
        raise ConformanceError(f"scatter_idx shape {scatter.shape} != {(numel, 1)}", reproduce)
    placed = np.flatnonzero(scatter[:, 0] >= 0)
    if not np.array_equal(sorted_ids[scatter[placed, 0]], placed):
        raise ConformanceError("sorted_token_ids[scatter_idx[i]] != i for a placed slot", reproduce)
    used = sorted_ids[: int(post_pad[0])]
    if placed.size != np.count_nonzero(used != numel):
        raise ConformanceError("scatter_idx marks a placed slot -1", reproduce)
