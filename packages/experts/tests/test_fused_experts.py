"""fused_experts on both backends against the NumPy reference, over every activation, biases,
expert maps, router weight on the input, odd sizes and M = 0."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from helpers import as_tensors, assert_matches, make_problem, reference, run, use_config

from moekit.experts import MoEActivation, fused_experts

BACKENDS = ["torch", "triton"]
MAP = np.array([-1, 0, 1, -1, 2, 3, -1, -1], dtype=np.int32)  # 8 global, 4 local


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", [a.value for a in MoEActivation])
def test_every_activation_with_biases(backend, activation):
    seed = zlib.crc32(activation.encode())
    problem = make_problem(seed, 7, 6, 3, 40, 24, activation, bias=True)
    assert_matches(run(problem, torch.float32, backend), reference(problem, torch.float32),
                   torch.float32, seed)  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize(
    "size",
    [(1, 4, 1, 32, 16), (3, 8, 2, 33, 20), (17, 16, 4, 64, 48), (40, 5, 5, 24, 8)],
    ids=lambda s: "x".join(map(str, s)),
)
def test_sizes_and_dtypes(backend, dtype, size):
    seed = zlib.crc32(repr((size, str(dtype))).encode())
    problem = make_problem(seed, *size)
    assert_matches(run(problem, dtype, backend), reference(problem, dtype), dtype, seed)


@pytest.mark.parametrize("backend", BACKENDS)
def test_expert_map_skips_non_local_experts(backend):
    problem = make_problem(11, 9, 4, 3, 32, 16, "gelu", expert_map=MAP)
    assert_matches(run(problem, torch.float32, backend), reference(problem, torch.float32),
                   torch.float32, 11)  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", ["silu", "swigluoai", "relu2_no_mul"])
@pytest.mark.parametrize("seed", range(4))
def test_one_token_with_skipped_and_non_local_slots(backend, activation, seed):
    """A single token takes the path without the alignment pass: every slot its own tile."""
    problem = make_problem(100 + seed, 1, 4, 6, 40, 24, activation, bias=True, expert_map=MAP)
    problem["topk_ids"] = np.random.default_rng(seed).permutation(8)[None, :6].astype(np.int32)
    problem["topk_ids"][0, seed % 6] = -1
    assert_matches(run(problem, torch.float32, backend), reference(problem, torch.float32),
                   torch.float32, seed)  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_local_map_equals_no_map(backend):
    problem = make_problem(12, 6, 4, 2, 32, 16)
    plain = run(problem, torch.float32, backend)
    mapped = run({**problem, "expert_map": np.arange(4, dtype=np.int32)}, torch.float32, backend)
    torch.testing.assert_close(mapped, plain)


@pytest.mark.parametrize("backend", BACKENDS)
def test_router_weight_on_input(backend):
    problem = make_problem(13, 8, 4, 1, 32, 16, "silu_no_mul")
    want = reference(problem, torch.float32, on_input=True)
    assert_matches(run(problem, torch.float32, backend, on_input=True), want, torch.float32, 13)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_tokens(backend):
    problem = make_problem(14, 3, 4, 2, 32, 16)
    t = as_tensors(problem, torch.float32)
    out = fused_experts(t["hidden_states"][:0], t["w1"], t["w2"], t["topk_weights"][:0],
                        t["topk_ids"][:0], backend=backend)  # fmt: skip
    assert out.shape == (0, 32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_in_the_routed_weights_and_permutation_equivariant(backend):
    problem = make_problem(15, 10, 6, 2, 32, 16)
    base = run(problem, torch.float32, backend)
    doubled = run({**problem, "topk_weights": problem["topk_weights"] * 2}, torch.float32, backend)
    torch.testing.assert_close(doubled, 2 * base, atol=1e-6, rtol=1e-5)
    order = np.random.default_rng(15).permutation(10)
    permuted = {**problem, "hidden_states": problem["hidden_states"][order],
                "topk_weights": problem["topk_weights"][order],
                "topk_ids": problem["topk_ids"][order]}  # fmt: skip
    torch.testing.assert_close(run(permuted, torch.float32, backend), base[order])


TILE_VARIANTS = {
    "shared": {},
    "gemm1-width-16": {"BLOCK_N1": 16},
    "gemm1-width-32": {"BLOCK_N1": 32},
    "gemm2-own-tile": {"BLOCK_N2": 16, "BLOCK_K2": 16, "num_warps2": 2, "num_stages2": 2},
    "tma": {"B_TMA": True},
    "tma-gemm2-own-tile": {"B_TMA": True, "BLOCK_N1": 16, "BLOCK_N2": 16, "BLOCK_K2": 16},
    "sorted-rows": {"SORTED_ROWS": True},
    "sorted-rows-tma": {"SORTED_ROWS": True, "B_TMA": True, "BLOCK_N2": 16, "BLOCK_K2": 16},
    # five tokens' m-tiles in groups of two (the last one partial), and in one group
    "group-m-2": {"GROUP_M": 2},
    "group-m-beyond-the-tiles": {"GROUP_M": 64},
    "expert-groups": {"EXPERT_GROUPS": True, "GROUP_M": 2},
}


def test_sorted_rows_share_the_workspace_when_it_has_room(monkeypatch):
    """With many slots per expert workspace2 is sized for the aligned positions, and a
    ``SORTED_ROWS`` entry writes its activated rows there instead of into a buffer of its own."""
    import moekit.experts.kernel as kernel
    from moekit.experts import triton_experts
    from moekit.experts._triton_impl.configs import GemmConfig

    monkeypatch.setattr(triton_experts, "MAX_BLOCK_M", 16)  # the room this config's blocks need
    workspaces = []

    def poisoned(shape, device, dtype):
        workspaces.append(torch.full(shape, float("nan"), device=device, dtype=dtype))
        return workspaces[-1]

    monkeypatch.setattr(kernel, "allocate_workspace", poisoned)
    use_config(monkeypatch, GemmConfig(BLOCK_M=16, BLOCK_N=32, BLOCK_K=32, num_stages=1,
                                       SORTED_ROWS=True))  # fmt: skip
    seed = 20261122
    num_tokens, top_k, inter = 130, 2, 40
    problem = make_problem(seed, num_tokens, 4, top_k, 48, inter, "silu")
    assert_matches(run(problem, torch.float32, "triton"), reference(problem, torch.float32),
                   torch.float32, seed)  # fmt: skip
    middle = [w for w in workspaces if w.dim() == 2 and w.shape[1] == inter]
    assert middle and middle[0].shape[0] > num_tokens * top_k, "workspace2 has no aligned room"
    assert not middle[0].isnan().all(), "GEMM1 wrote its rows elsewhere"


@pytest.mark.parametrize("variant", TILE_VARIANTS)
@pytest.mark.parametrize("activation", ["silu", "swigluoai", "gelu_no_mul"])
@pytest.mark.parametrize("hidden", [48, 64])  # 48: tail tiles in N (GEMM2) and K (GEMM1)
def test_tile_variants_leave_the_result(monkeypatch, variant, activation, hidden):
    """Tuned tables may give GEMM1 its own activation width, GEMM2 its own tile, read the
    weights through TMA descriptors and lay the rows out in the aligned order (A through TMA
    too); none of it may change the result. With ``inter = 40`` a
    tail tile's descriptor rows reach into the next expert and must stay masked."""
    from moekit.experts._triton_impl.configs import GemmConfig

    config = GemmConfig(BLOCK_M=16, BLOCK_N=32, BLOCK_K=32, num_stages=1, **TILE_VARIANTS[variant])
    use_config(monkeypatch, config)
    seed = zlib.crc32(f"{activation}{variant}{hidden}".encode())
    for num_tokens in (1, 5):  # one token's path (no alignment) and the aligned one
        problem = make_problem(seed, num_tokens, 4, 2, hidden, 40, activation, bias=True)
        assert_matches(run(problem, torch.float32, "triton"), reference(problem, torch.float32),
                       torch.float32, seed)  # fmt: skip


@pytest.mark.parametrize("group_m", [1, 2, 4, 32])
def test_expert_groups_cover_every_tile_once(monkeypatch, group_m):
    """``EXPERT_GROUPS`` orders the tiles by expert: a run of one expert's m-tiles shorter than
    ``GROUP_M`` is one group, a longer one is cut at multiples of ``GROUP_M``, and the ``-1``
    blocks past the used range form runs too. Skewed routing gives expert 0 a run of about three
    16-row tiles and the others one each, so every kind meets; a tile walked twice or never
    leaves a wrong or poisoned row."""
    from moekit.experts._triton_impl.configs import GemmConfig

    use_config(monkeypatch, GemmConfig(BLOCK_M=16, BLOCK_N=32, BLOCK_K=32, num_stages=1,
                                       GROUP_M=group_m, EXPERT_GROUPS=True))  # fmt: skip
    seed = zlib.crc32(f"expert-groups{group_m}".encode())
    problem = make_problem(seed, 48, 6, 2, 48, 40, "silu", bias=True)
    rng = np.random.default_rng(seed)
    hot = rng.random(48) < 0.8  # most tokens pick expert 0
    problem["topk_ids"][hot, 0] = 0
    problem["topk_ids"][hot, 1] = rng.integers(1, 6, hot.sum())
    assert_matches(run(problem, torch.float32, "triton"), reference(problem, torch.float32),
                   torch.float32, seed)  # fmt: skip


def test_expert_groups_need_a_power_of_two():
    from moekit.experts._triton_impl.configs import GemmConfig

    with pytest.raises(ValueError, match="GROUP_M"):
        GemmConfig(BLOCK_M=16, BLOCK_N=32, BLOCK_K=32, GROUP_M=6, EXPERT_GROUPS=True)
