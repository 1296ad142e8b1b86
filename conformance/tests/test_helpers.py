"""Tests of the suite's own helpers: a checker that cannot fail would certify anything."""

import numpy as np
import pytest

import moekit.reference as ref
from moekit.conformance import generators as gen
from moekit.conformance.adapters import MoekitAdapter, ReferenceAdapter, load_adapter
from moekit.conformance.checks import (
    ConformanceError,
    call_repr,
    check_align_invariants,
    compare_align,
)
from moekit.conformance.xfails import parse_xfails

SEED = 1234


def reference_case(seed=SEED, block=4, experts=9):
    ids = gen.topk_ids(seed, 20, 3, experts, invalid_fraction=0.1)
    return ids, block, experts, ref.moe_align_block_size(ids, block, experts)


def test_invariants_accept_the_reference():
    ids, block, experts, out = reference_case()
    check_align_invariants(ids, block, experts, out)


@pytest.mark.parametrize("corruption", ["swap-slot", "drop-slot", "bad-post-pad", "tail-expert"])
def test_invariants_catch_corruptions(corruption):
    ids, block, experts, out = reference_case()
    sorted_ids, expert_ids, post_pad = (o.copy() for o in out)
    numel = ids.size
    if corruption == "swap-slot":  # a slot moved into another expert's block
        first = int(np.flatnonzero(sorted_ids != numel)[0])
        last = int(np.flatnonzero(sorted_ids[: post_pad[0]] != numel)[-1])
        sorted_ids[first], sorted_ids[last] = sorted_ids[last], sorted_ids[first]
    elif corruption == "drop-slot":
        sorted_ids[int(np.flatnonzero(sorted_ids != numel)[0])] = numel
    elif corruption == "bad-post-pad":
        post_pad[0] += 1
    else:
        expert_ids[-1] = 0
    with pytest.raises(ConformanceError, match="reproduce: x"):
        check_align_invariants(ids, block, experts, (sorted_ids, expert_ids, post_pad),
                               reproduce="x")  # fmt: skip


def test_compare_align_set_mode_ignores_order_inside_blocks_only():
    ids, block, experts, out = reference_case(block=8)
    shuffled = out[0].copy()
    shuffled[:8] = shuffled[:8][::-1]
    compare_align(out, (shuffled, out[1], out[2]), 8, ordered=False, reproduce="")
    with pytest.raises(ConformanceError):
        compare_align(out, (shuffled, out[1], out[2]), 8, ordered=True, reproduce="")
    moved = out[0].copy()
    moved[0], moved[8] = moved[8], moved[0]
    if not np.array_equal(moved, out[0]):
        with pytest.raises(ConformanceError):
            compare_align(out, (moved, out[1], out[2]), 8, ordered=False, reproduce="")


def test_call_repr_is_one_line_and_replays():
    args = dict(topk_ids=np.array([[1, 0]], dtype=np.int32), block_size=2, num_experts=2)
    line = call_repr("moe_align_block_size", args)
    assert "\n" not in line
    adapter = ReferenceAdapter()
    replayed = eval(line, {"np": np, "adapter": adapter})
    for a, b in zip(replayed, adapter.moe_align_block_size(**args)):
        np.testing.assert_array_equal(a, b)


def test_parse_xfails():
    entries = parse_xfails("# header\n\ntest_a[x]  # known: bf16\ntest_b*  # flaky device\n")
    assert [(e.pattern, e.reason) for e in entries] == [
        ("test_a[x]", "known: bf16"),
        ("test_b*", "flaky device"),
    ]
    assert entries[0].matches("pkg/test_mod.py::test_a[x]")
    assert not entries[0].matches("pkg/test_mod.py::test_a[y]")
    assert entries[1].matches("pkg/test_mod.py::test_b_other")
    with pytest.raises(ValueError, match="reason"):
        parse_xfails("test_a\n")


def test_load_adapter_specs():
    assert load_adapter("reference").name == "reference"
    moekit = load_adapter("moekit[torch,cpu]")
    assert isinstance(moekit, MoekitAdapter)
    assert (moekit.backend, moekit.device) == ("torch", "cpu")
    assert "bfloat16" not in moekit.capabilities
    custom = load_adapter("moekit.conformance.adapters:ReferenceAdapter")
    assert isinstance(custom, ReferenceAdapter)
    with pytest.raises(ValueError, match="unknown implementation"):
        load_adapter("vllm")


def test_generators_are_reproducible_and_distinct_per_token():
    a = gen.topk_ids(7, 50, 4, 16, skew=1.5)
    np.testing.assert_array_equal(a, gen.topk_ids(7, 50, 4, 16, skew=1.5))
    assert all(len(set(row)) == 4 for row in a.tolist())
    emap = gen.expert_map(3, 16, 5)
    assert sorted(emap[emap >= 0].tolist()) == list(range(5))
