"""The L2 eviction policy of the rows each GEMM stores for the next kernel (``row_cache``): the
rule, and that a call's kernels get it and still match the reference under either policy."""

from __future__ import annotations

import zlib

import pytest
import torch
from helpers import assert_matches, make_problem, reference, run, use_config

from moekit.experts._triton_impl import gate_up_gemm, row_cache
from moekit.experts._triton_impl.row_cache import activated_rows_eviction, slot_rows_eviction

MIB = 1 << 20


@pytest.mark.parametrize(
    ("num_bytes", "experts", "default_policy", "want"),
    [
        (8 * MIB, 128, False, "evict_last"),  # Qwen3 at 256 tokens
        (12 * MIB, 32, False, "evict_last"),  # at both limits
        (12 * MIB + 1, 128, False, ""),  # too large
        (4 * MIB, 31, False, ""),  # too few experts
        (4 * MIB, 8, False, ""),  # Mixtral
        (1 * MIB, 128, True, ""),  # the entry keeps the default
    ],
)
def test_slot_rows_take_evict_last_when_small_and_the_experts_many(
    num_bytes, experts, default_policy, want
):
    assert slot_rows_eviction(num_bytes, experts, default_policy) == want


def test_activated_rows_take_evict_last_unless_the_entry_says_otherwise():
    assert activated_rows_eviction(False) == row_cache.ACTIVATED_ROWS_EVICTION == "evict_last"
    assert activated_rows_eviction(True) == ""


@pytest.mark.parametrize("default_policy", [False, True])
def test_the_kernels_get_the_rule_and_match_the_reference(monkeypatch, default_policy):
    from moekit.experts import triton_experts
    from moekit.experts._triton_impl.configs import GemmConfig

    seen: dict[str, list[str]] = {"activated": [], "slot": []}

    def spy(name, real):
        def wrapper(*args):
            policy = real(*args)
            seen[name].append(policy)
            return policy

        return wrapper

    monkeypatch.setattr(gate_up_gemm, "activated_rows_eviction",
                        spy("activated", activated_rows_eviction))  # fmt: skip
    monkeypatch.setattr(triton_experts, "slot_rows_eviction", spy("slot", slot_rows_eviction))
    use_config(monkeypatch, GemmConfig(BLOCK_M=16, BLOCK_N=32, BLOCK_K=32, num_stages=1,
                                       ROWS_DEFAULT_POLICY=default_policy))  # fmt: skip
    seed = zlib.crc32(f"row-cache{default_policy}".encode())
    monkeypatch.setattr(row_cache, "SLOT_ROWS_MIN_EXPERTS", 8)  # so that 8 experts take it
    problem = make_problem(seed, 24, 8, 2, 48, 40)
    assert_matches(run(problem, torch.float32, "triton"), reference(problem, torch.float32),
                   torch.float32, seed)  # fmt: skip
    want = "" if default_policy else "evict_last"
    assert seen == {"activated": [want], "slot": [want]}, seed
