"""Both GEMMs as one program per local expert (``expert_programs``): the kernel's per-slot rows
against a NumPy model (remote, skipped and repeated experts, experts with more slots than one
16-row block, outputs poisoned with NaN so that unwritten rows show), the rule, and the whole
Triton path through it against the reference."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from helpers import assert_matches, grouped_gemm_reference, make_problem, reference, run, use_config

from moekit.experts import apply_activation
from moekit.experts._triton_impl.configs import GemmConfig
from moekit.experts.activation import MoEActivation

MAP = np.array([-1, 0, 1, -1, 2, 3, -1, -1], dtype=np.int32)  # 8 global, 4 local
# Tiles small enough that the problems below take several K steps and column blocks in both
# GEMMs, ragged ones included, 16-row blocks whatever the rows per expert (so one expert spills
# into a second block) and several scans of 16 ids; the shipped tile takes one of each.
SMALL_TILE = {"BLOCK_N1": 16, "BLOCK_K1": 32, "BLOCK_N2": 16, "BLOCK_K2": 16, "SCAN_MAX": 16,
              "BLOCK_M_BY_MEAN_ROWS": ((1 << 30, 16),)}  # fmt: skip


def use_tile(monkeypatch, tile: str) -> None:
    from moekit.experts._triton_impl import expert_programs

    if tile == "small":
        for name, value in SMALL_TILE.items():
            monkeypatch.setattr(expert_programs, name, value)


def local_ids(ids: np.ndarray, expert_map: np.ndarray | None, num_global: int) -> np.ndarray:
    flat = ids.reshape(-1)
    valid = (flat >= 0) & (flat < num_global)
    mapped = flat if expert_map is None else expert_map[np.clip(flat, 0, num_global - 1)]
    return np.where(valid, mapped, -1)


def check_kernel_rows(ids: np.ndarray, dtype: torch.dtype, activation: str, with_map: bool,
                      seed: int) -> None:  # fmt: skip
    """Run the kernel on ``ids [tokens, top_k]`` (4 local experts, 128 columns) with outputs
    poisoned with NaN, and check every slot's activated and weighted rows against a NumPy
    model, and that no slot of a remote or skipped expert was written."""
    from moekit.experts._triton_impl.expert_programs import expert_weights, invoke_expert_programs

    rng = np.random.default_rng(seed)
    act = MoEActivation.parse(activation)
    # 128 columns: the interleaved layout's descriptor needs whole K blocks
    (num_tokens, top_k), k, n_out, num_local = ids.shape, 128, 24, 4
    num_global = len(MAP) if with_map else num_local
    n = 2 * n_out if act.is_gated else n_out
    x = (rng.standard_normal((num_tokens, k)) / 10).astype(np.float32)
    w13 = (rng.standard_normal((num_local, n, k)) / 10).astype(np.float32)
    w2 = (rng.standard_normal((num_local, k, n_out)) / 10).astype(np.float32)
    b1 = (rng.standard_normal((num_local, n)) / 10).astype(np.float32)
    b2 = (rng.standard_normal((num_local, k)) / 10).astype(np.float32)
    weights = rng.random(ids.size).astype(np.float32)
    x_t, w13_t, w2_t, b1_t, b2_t = (torch.tensor(v).to(dtype) for v in (x, w13, w2, b1, b2))
    activated = torch.full((ids.size, n_out), float("nan"), dtype=dtype)
    rows = torch.full((ids.size, k), float("nan"), dtype=dtype)
    descriptors = expert_weights(w13_t, w2_t, act)
    assert descriptors is not None
    invoke_expert_programs(
        x_t, descriptors, activated, rows, b1_t, b2_t, torch.tensor(weights), torch.tensor(ids),
        torch.tensor(MAP) if with_map else None, num_global, num_local, act,
    )  # fmt: skip

    local = local_ids(ids, MAP if with_map else None, num_global)
    top = np.repeat(np.arange(num_tokens), top_k)
    h = np.zeros((ids.size, n), dtype=np.float64)
    for slot, expert in enumerate(local):
        if expert >= 0:
            h[slot] = x_t[top[slot]].double().numpy() @ w13_t[expert].double().numpy().T
            h[slot] += b1_t[expert].double().numpy()
    want_act = apply_activation(torch.tensor(h), activation).to(dtype)
    mine = torch.tensor(local >= 0)
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(activated[mine].float(), want_act[mine].float(), atol=tol,
                               rtol=tol, msg=lambda m: f"activated rows, seed={seed}: {m}")  # fmt: skip
    want = grouped_gemm_reference(
        activated.double().numpy(), w2_t.double().numpy(), b2_t.double().numpy(), weights, local
    )
    got = rows.float().numpy()
    np.testing.assert_allclose(got[local >= 0], want[local >= 0], atol=tol, rtol=tol,
                               err_msg=f"seed={seed}")  # fmt: skip
    assert np.isnan(got[local < 0]).all(), f"rows of no local expert were written, seed={seed}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("activation", ["silu", "swigluoai", "gelu_no_mul"])
@pytest.mark.parametrize("with_map", [False, True])
@pytest.mark.parametrize("tile", ["shipped", "small"])  # 64-row blocks here, and 16-row
def test_kernel_rows_match_the_model(monkeypatch, dtype, activation, with_map, tile):
    use_tile(monkeypatch, tile)
    seed = zlib.crc32(f"expert-programs{dtype}{activation}{with_map}{tile}".encode())
    rng = np.random.default_rng(seed + 1)
    num_global = len(MAP) if with_map else 4
    ids = rng.integers(-1, num_global, size=(21, 3)).astype(np.int32)
    ids[:19, 0] = 1  # 19 slots of one expert: more than one 16-row block (local 0 with the map)
    ids[2] = ids[2, 0]  # one expert three times in a token
    local = local_ids(ids, MAP if with_map else None, num_global)
    assert (local == local[0]).sum() > 16, "the problem must spill one expert past 16 rows"
    check_kernel_rows(ids, dtype, activation, with_map, seed)


@pytest.mark.parametrize("workers", [1, 3, 8])
def test_busy_experts_blocks_are_shared_by_the_workers(monkeypatch, workers):
    """Two busy experts with three 16-row blocks each: four blocks past the first, taken by one
    worker in turn, by three unevenly, or by eight of which most find none."""
    from moekit.experts._triton_impl import expert_programs

    use_tile(monkeypatch, "small")
    monkeypatch.setattr(expert_programs, "MIN_WORKERS", workers)
    seed = zlib.crc32(f"expert-programs-workers{workers}".encode())
    rng = np.random.default_rng(seed)
    ids = rng.integers(-1, 4, size=(40, 2)).astype(np.int32)
    ids[:, 0] = 3  # 40 slots
    ids[:34, 1] = 1  # 34 slots
    ids[34:, 1] = rng.choice([0, 2, -1], size=6)
    check_kernel_rows(ids, torch.float32, "silu", False, seed)


@pytest.mark.parametrize(
    ("num_slots", "want", "stages_and_warps"),
    [(512, 16, (4, 4)), (513, 64, (3, 8)), (2048, 64, (3, 8))],
)
def test_block_rows_follow_the_mean_rows_per_expert(num_slots, want, stages_and_warps):
    from moekit.experts._triton_impl import expert_programs

    assert expert_programs.block_m(num_slots, 128) == want  # 4 rows each at the limit
    assert expert_programs.stages_and_warps(want) == stages_and_warps


def test_rule_serves_only_entries_that_ask_and_few_rows_per_expert():
    from moekit.experts.triton_experts import EXPERT_PROGRAMS_MAX_ROWS, expert_programs_serve

    entry = GemmConfig(BLOCK_M=16, BLOCK_N=64, BLOCK_K=128, EXPERT_PROGRAMS=True)
    limit = EXPERT_PROGRAMS_MAX_ROWS * 128
    assert expert_programs_serve(entry, limit, 128)  # Qwen3-30B TP2 at 256 tokens
    assert not expert_programs_serve(entry, limit + 1, 128)
    assert not expert_programs_serve(GemmConfig(BLOCK_M=16, BLOCK_N=64, BLOCK_K=128), 128, 128)
    assert GemmConfig(**entry.as_dict()) == entry  # the tables store the field
    # an entry's own limit: 4 slots per expert (the H200's entries)
    lower = GemmConfig(BLOCK_M=16, BLOCK_N=64, BLOCK_K=128, EXPERT_PROGRAMS=True,
                       EXPERT_PROGRAMS_ROWS=4)  # fmt: skip
    assert expert_programs_serve(lower, 4 * 128, 128)
    assert not expert_programs_serve(lower, 4 * 128 + 1, 128)
    assert GemmConfig(**lower.as_dict()) == lower


@pytest.mark.parametrize("rows", [-1, 4])
def test_entry_refuses_a_row_limit_without_the_path(rows):
    with pytest.raises(ValueError, match="EXPERT_PROGRAMS_ROWS"):
        GemmConfig(BLOCK_M=16, BLOCK_N=64, BLOCK_K=128, EXPERT_PROGRAMS=rows < 0,
                   EXPERT_PROGRAMS_ROWS=rows)  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("activation", ["silu", "swigluoai", "gelu"])
@pytest.mark.parametrize("with_map", [False, True])
@pytest.mark.parametrize("on_input", [False, True])
def test_path_matches_the_reference(monkeypatch, dtype, activation, with_map, on_input):
    from moekit.experts import triton_experts
    from moekit.experts._triton_impl import expert_programs

    seed = zlib.crc32(f"expert-programs-path{dtype}{activation}{with_map}{on_input}".encode())
    calls = []
    real = expert_programs.invoke_expert_programs
    monkeypatch.setattr(expert_programs, "invoke_expert_programs",
                        lambda *a, **kw: calls.append(1) or real(*a, **kw))  # fmt: skip
    monkeypatch.setattr(triton_experts, "EXPERT_PROGRAMS_MAX_ROWS", 64)
    use_config(monkeypatch, GemmConfig(BLOCK_M=16, BLOCK_N=32, BLOCK_K=32, num_stages=1,
                                       EXPERT_PROGRAMS=True))  # fmt: skip
    use_tile(monkeypatch, "small")
    top_k = 1 if on_input else 2  # weights on the input need top-1
    # 40 tokens over 4 experts: some expert has more slots than one 16-row block
    problem = make_problem(seed, 40, 4, top_k, 128, 40, activation, bias=not on_input,
                           expert_map=MAP if with_map else None)  # fmt: skip
    want = reference(problem, dtype, on_input)
    assert_matches(run(problem, dtype, "triton", on_input), want, dtype, seed)
    assert calls == [1], f"the call did not take the path, seed={seed}"


def test_path_declines_weights_without_descriptors(monkeypatch):
    """gpt-oss's interleaved rows need whole K blocks of the path's 128 columns: with 48 the
    call takes the aligned path, and still matches."""
    from moekit.experts import triton_experts
    from moekit.experts._triton_impl import expert_programs

    seed = zlib.crc32(b"expert-programs-declined")
    calls = []
    monkeypatch.setattr(expert_programs, "invoke_expert_programs",
                        lambda *a, **kw: calls.append(1))  # fmt: skip
    monkeypatch.setattr(triton_experts, "EXPERT_PROGRAMS_MAX_ROWS", 64)
    use_config(monkeypatch, GemmConfig(BLOCK_M=16, BLOCK_N=32, BLOCK_K=32, num_stages=1,
                                       EXPERT_PROGRAMS=True))  # fmt: skip
    problem = make_problem(seed, 12, 4, 2, 48, 24, "swigluoai", bias=True)
    want = reference(problem, torch.float32)
    assert_matches(run(problem, torch.float32, "triton"), want, torch.float32, seed)
    assert calls == [], f"the path ran without descriptors, seed={seed}"
