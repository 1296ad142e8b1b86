"""The tile variants a tuned table may pick (GEMM2's own tile, TMA weight reads, GEMM1's own
width) on a real GPU, bf16 included, against the NumPy reference.

The interpreter tests cover the same variants on the CPU but not bf16 (the interpreter's bf16
``tl.dot`` is wrong) nor the hardware's TMA and wgmma paths. Run on a CUDA machine with the
interpreter off: ``TRITON_INTERPRET=0 pytest packages/experts/tests/test_gpu_tiles.py``.
"""

from __future__ import annotations

import os
import zlib

import pytest
import torch
from helpers import (
    assert_matches,
    make_problem,
    path_from_chunks_matches,
    reference,
    run,
    use_config,
)

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1",
    reason="needs a CUDA GPU with the Triton interpreter off (TRITON_INTERPRET=0)",
)

TILE = dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=4, num_stages=3)
VARIANTS = {  # hardware-sized tiles; hidden 192 and inter 320 leave tail tiles in N and K
    "shared": TILE,
    "tma": {**TILE, "B_TMA": True},
    "tma-wide": {**TILE, "BLOCK_M": 128, "BLOCK_N": 256, "num_warps": 8, "num_stages": 2,
                 "B_TMA": True},
    "gemm2-own-tile": {**TILE, "BLOCK_N2": 256, "BLOCK_K2": 32, "num_warps2": 8,
                       "num_stages2": 4},
    "tma-gemm2-own-tile-decode": dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=128, num_warps=4,
                                      num_stages=4, BLOCK_N1=64, BLOCK_N2=64, B_TMA=True),
    "sorted-rows": {**TILE, "B_TMA": True, "SORTED_ROWS": True},
    "one-group": {**TILE, "GROUP_M": 32, "B_TMA": True},  # Mixtral's 256-token entries
    "expert-groups": {**TILE, "GROUP_M": 8, "EXPERT_GROUPS": True, "SORTED_ROWS": True},
    # 300 and 560 tokens give 75 and 140 rows per expert: short last tiles that fold
    "tail-fold": {**TILE, "TAIL_M": 16, "TAIL_M2": 16, "B_TMA": True},
    "tail-fold-wide-sorted": {**TILE, "BLOCK_M": 128, "BLOCK_N": 256, "num_warps": 8,
                              "num_stages": 2, "B_TMA": True, "SORTED_ROWS": True,
                              "TAIL_M": 64, "TAIL_M2": 32},
    "tail-fold-swapped": {**TILE, "TAIL_M": 16, "TAIL_M2": 32, "B_TMA": True, "TAIL_SWAP": True},
    "tail-fold-wide-sorted-swapped": {**TILE, "BLOCK_M": 128, "BLOCK_N": 256, "num_warps": 8,
                                      "num_stages": 2, "B_TMA": True, "SORTED_ROWS": True,
                                      "TAIL_M": 16, "TAIL_M2": 64, "TAIL_SWAP": True},
    # 32-row tiles with 16-row tails: at about 75 and 140 rows per expert, some experts' last
    # tiles hold 16 rows or fewer and fold; swapped tail products beside small-M tile products
    "tail-fold-half-swapped": {**TILE, "BLOCK_M": 32, "BLOCK_N": 64, "B_TMA": True,
                               "TAIL_M": 16, "TAIL_M2": 16, "TAIL_SWAP": True},
    # whole-tile tails: every expert's last tile folds, whatever its rows (Mixtral's 256-token
    # entries fold GEMM2's)
    "tail-fold-whole-tile-swapped": {**TILE, "TAIL_M": 16, "TAIL_M2": 64, "B_TMA": True,
                                     "TAIL_SWAP": True},
    "tail-fold-whole-tiles": {**TILE, "TAIL_M": 64, "TAIL_M2": 64, "B_TMA": True},
    # gpt-oss's H100 decode entries: one K step wider than this K (192), two over I (320)
    "block-k-256-decode": dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=256, num_warps=4, num_stages=4,
                               BLOCK_N2=64, BLOCK_K2=256, num_warps2=8, num_stages2=4),
}  # fmt: skip


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("activation", ["silu", "swigluoai", "gelu_no_mul"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
def test_tile_variant_on_gpu(monkeypatch, variant, activation, dtype):
    from moekit.experts._triton_impl.configs import GemmConfig

    if dtype == torch.float32 and variant not in ("shared", "tma", "sorted-rows"):
        pytest.skip("float32 tiles this large overflow shared memory; tables serve 16-bit types")
    config = GemmConfig(**VARIANTS[variant])
    use_config(monkeypatch, config)
    seed = zlib.crc32(f"{variant}{activation}{dtype}".encode())
    for num_tokens in (1, 37, 300, 560):
        problem = make_problem(seed, num_tokens, 8, 2, 192, 320, activation, bias=True)
        got = run(problem, dtype, "triton", device="cuda")
        assert_matches(got, reference(problem, dtype), dtype, seed)


@pytest.mark.parametrize("ids", [[1, 4, 2, 5], [-1, 4, 8, 5], [4, 1, 4, 4], [2, 7, -1, 2]])
def test_one_token_sum_on_gpu_matches_moe_sum_bit_for_bit(monkeypatch, ids):
    """GEMM2's own top-k sum of one token (cross-program arrival counters) against the separate
    ``moe_sum`` launch: bf16 results equal bit for bit, every time, with skipped, remote and
    repeated experts and a token with no local slot."""
    import numpy as np

    from moekit.experts import triton_experts
    from moekit.experts._triton_impl.configs import GemmConfig

    use_config(monkeypatch, GemmConfig(**VARIANTS["tma-gemm2-own-tile-decode"]))
    seed = zlib.crc32(f"gpu-one-token{ids}".encode())
    expert_map = np.array([0, 1, -1, 2, 3, 4, 5, -1, 6, 7], dtype=np.int32)
    problem = make_problem(seed, 1, 8, 4, 192, 320, "silu", bias=True, expert_map=expert_map)
    problem["topk_ids"][0] = ids
    monkeypatch.setattr(triton_experts, "FUSED_TOPK_SUM", False)
    want = run(problem, torch.bfloat16, "triton", device="cuda")
    monkeypatch.setattr(triton_experts, "FUSED_TOPK_SUM", True)
    for _ in range(10):
        assert torch.equal(run(problem, torch.bfloat16, "triton", device="cuda"), want), seed
    assert_matches(want, reference(problem, torch.bfloat16), torch.bfloat16, seed)


def test_small_batch_tiles_on_gpu_match_the_aligned_path_bit_for_bit(monkeypatch):
    """Three tokens with tiles from ``topk_ids`` (forced by the slot share) and GEMM2's own top-k
    sum against the aligned path with ``moe_sum``: bf16 results equal bit for bit, every time,
    with skipped, remote, repeated and shared experts."""
    import numpy as np

    from moekit.experts import triton_experts
    from moekit.experts._triton_impl.configs import GemmConfig

    use_config(monkeypatch, GemmConfig(**VARIANTS["tma-gemm2-own-tile-decode"]))
    seed = zlib.crc32(b"gpu-small-batch")
    expert_map = np.array([0, 1, -1, 2, 3, 4, 5, -1, 6, 7], dtype=np.int32)
    problem = make_problem(seed, 3, 8, 4, 192, 320, "silu", bias=True, expert_map=expert_map)
    problem["topk_ids"][:] = [[1, 4, 2, 5], [4, 4, -1, 8], [2, 7, 9, 1]]
    monkeypatch.setattr(triton_experts, "IDS_TILES_MAX_SLOTS_PER_EXPERT", 0.0)
    want = run(problem, torch.bfloat16, "triton", device="cuda")
    monkeypatch.setattr(triton_experts, "IDS_TILES_MAX_SLOTS_PER_EXPERT", 2.0)  # 12 slots, 8 local
    for _ in range(10):
        assert torch.equal(run(problem, torch.bfloat16, "triton", device="cuda"), want), seed
    assert_matches(want, reference(problem, torch.bfloat16), torch.bfloat16, seed)


@pytest.mark.parametrize("unrolled", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_token_sum_gemm2_on_gpu(monkeypatch, unrolled, dtype):
    """GEMM2 in token order with the top-k sum (forced on), its K steps in a loop or unrolled,
    against the reference with skipped, remote and repeated experts; ten runs equal bit for
    bit."""
    import numpy as np

    from moekit.experts import triton_experts
    from moekit.experts._triton_impl import token_sum_gemm

    tile = token_sum_gemm.TokenSumTile(max_unrolled_steps=4 if unrolled else 0)  # I = 320
    monkeypatch.setattr(token_sum_gemm, "DEFAULT_TILE", tile)
    monkeypatch.setattr(triton_experts, "token_sum_gemm2", lambda *_: True)
    expert_map = np.array([0, 1, -1, 2, 3, 4, 5, -1, 6, 7], dtype=np.int32)
    for num_tokens in (1, 3, 8):
        seed = zlib.crc32(f"gpu-token-sum{unrolled}{dtype}{num_tokens}".encode())
        problem = make_problem(seed, num_tokens, 8, 4, 192, 320, "silu", bias=True,
                               expert_map=expert_map)  # fmt: skip
        problem["topk_ids"][0] = [4, 1, 4, 2]  # one expert twice, one remote
        want = run(problem, dtype, "triton", device="cuda")
        assert_matches(want, reference(problem, dtype), dtype, seed)
        for _ in range(10):
            assert torch.equal(run(problem, dtype, "triton", device="cuda"), want), seed


PROGRAMMATIC_CASES = {  # (tile variant, tokens, forced path): each path's chain of launches
    "aligned-moe-sum": ("shared", 37, None),
    "aligned-sorted-rows": ("sorted-rows", 300, None),
    "one-token-fused-sum": ("tma-gemm2-own-tile-decode", 1, None),
    "token-order-gemm2": ("tma-gemm2-own-tile-decode", 3, "token_sum"),
}


@pytest.mark.parametrize("gemm1_early", [False, True], ids=["rule", "gemm1-early"])
@pytest.mark.parametrize("case", PROGRAMMATIC_CASES)
def test_programmatic_launch_on_gpu_matches_plain_launches_bit_for_bit(monkeypatch, case,
                                                                       gemm1_early):  # fmt: skip
    """Each path's kernels launched with programmatic dependent launch (each waits for the one
    before it, each but the last lets the next start early; GEMM1 as the rule says, which these
    small grids keep from it, or always) against plain launches: bf16 results equal bit for bit,
    ten times over, and match the reference, with skipped and remote experts. On a GPU before
    Hopper both runs take plain launches."""
    import numpy as np

    from moekit.experts import triton_experts
    from moekit.experts._triton_impl.configs import GemmConfig

    variant, num_tokens, forced = PROGRAMMATIC_CASES[case]
    use_config(monkeypatch, GemmConfig(**VARIANTS[variant]))
    if forced == "token_sum":
        monkeypatch.setattr(triton_experts, "token_sum_gemm2", lambda *_: True)
    if gemm1_early:
        monkeypatch.setattr(triton_experts, "EARLY_START_MIN_PROGRAMS_PER_SM", 0)
    seed = zlib.crc32(f"gpu-programmatic{case}{gemm1_early}".encode())
    expert_map = np.array([0, 1, -1, 2, 3, 4, 5, -1, 6, 7], dtype=np.int32)
    problem = make_problem(seed, num_tokens, 8, 4, 192, 320, "silu", bias=True,
                           expert_map=expert_map)  # fmt: skip
    problem["topk_ids"][0] = [4, 1, -1, 2]  # one skipped slot, one remote
    monkeypatch.setattr(triton_experts, "PROGRAMMATIC_LAUNCH", False)
    want = run(problem, torch.bfloat16, "triton", device="cuda")
    assert_matches(want, reference(problem, torch.bfloat16), torch.bfloat16, seed)
    monkeypatch.setattr(triton_experts, "PROGRAMMATIC_LAUNCH", True)
    for _ in range(10):
        assert torch.equal(run(problem, torch.bfloat16, "triton", device="cuda"), want), seed


@pytest.mark.parametrize("activation", ["silu", "swigluoai"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("pdl", [False, True], ids=["plain", "programmatic"])
def test_expert_programs_on_gpu_match_the_aligned_path_bit_for_bit(monkeypatch, activation,
                                                                    dtype, pdl):  # fmt: skip
    """One program per local expert (forced on) against the aligned path with the same K steps
    (128 columns): results equal bit for bit, ten times over, and match the reference, with
    skipped, remote and repeated experts: at 12 tokens in one 64-row block per expert (three
    stages over eight warps), at 37 in 16-row blocks (forced) and at 200 in 64-row blocks, so
    that experts spill into blocks that the worker programs take; gpt-oss's interleaved rows
    with biases too."""
    import numpy as np

    from moekit.experts import triton_experts
    from moekit.experts._triton_impl import expert_programs
    from moekit.experts._triton_impl.configs import GemmConfig

    monkeypatch.setattr(triton_experts, "PROGRAMMATIC_LAUNCH", pdl)
    monkeypatch.setattr(triton_experts, "EXPERT_PROGRAMS_MAX_ROWS", 128)
    tile = dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=128, num_stages=3, B_TMA=True)
    expert_map = np.array([0, 1, -1, 2, 3, 4, 5, -1, 6, 7], dtype=np.int32)
    shipped_rows = expert_programs.BLOCK_M_BY_MEAN_ROWS
    for num_tokens in (12, 37, 200):
        seed = zlib.crc32(f"gpu-expert-programs{activation}{dtype}{pdl}{num_tokens}".encode())
        problem = make_problem(seed, num_tokens, 8, 4, 256, 320, activation, bias=True,
                               expert_map=expert_map)  # fmt: skip
        problem["topk_ids"][0] = [4, 1, -1, 2]  # one skipped slot, one remote
        problem["topk_ids"][2] = [4, 4, 4, 5]  # one expert three times
        use_config(monkeypatch, GemmConfig(**tile))
        want = run(problem, dtype, "triton", device="cuda")
        assert_matches(want, reference(problem, dtype), dtype, seed)
        use_config(monkeypatch, GemmConfig(**tile, EXPERT_PROGRAMS=True))
        # 37 tokens: 18.5 slots per expert, some past 16
        forced_rows = ((1 << 30, 16),) if num_tokens == 37 else shipped_rows
        monkeypatch.setattr(expert_programs, "BLOCK_M_BY_MEAN_ROWS", forced_rows)
        if num_tokens == 200:  # 100 slots per local expert: two 64-row blocks
            assert expert_programs.block_m(4 * num_tokens, 8) == 64
        calls = []
        real = triton_experts.TritonExperts._expert_programs
        monkeypatch.setattr(triton_experts.TritonExperts, "_expert_programs",
                            lambda *a: calls.append(real(*a)) or calls[-1])  # fmt: skip
        for _ in range(10):
            assert torch.equal(run(problem, dtype, "triton", device="cuda"), want), seed
        assert calls == [True] * 10, f"the calls did not take the path, seed={seed}"
        monkeypatch.setattr(triton_experts.TritonExperts, "_expert_programs", real)


# weights in K chunks (sizes in chunks of 64 columns; in chunks of 128 the 64-column steps read
# half a chunk): tiles of one or two chunks a step, tails, sorted rows
GPU_PATH_TILES = {
    "tma": dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=64, num_warps=4, num_stages=3, B_TMA=True),
    # Mixtral's 256-token entries: GEMM2 a chunk a step at three stages (four of two chunks
    # with its whole-tile tails overflow shared memory)
    "tma-two-chunk-steps": dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=2 * 64, num_warps=4,
                                num_stages=4, BLOCK_N2=128, BLOCK_K2=64, num_warps2=4,
                                num_stages2=3, B_TMA=True, TAIL_M=16, TAIL_M2=64, TAIL_SWAP=True),
    "sorted-rows-wide": dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, num_warps=8, num_stages=3,
                             B_TMA=True, SORTED_ROWS=True, EXPERT_GROUPS=True),
    "decode-two-chunk-steps": dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=2 * 64, num_warps=4,
                                   num_stages=4, BLOCK_N1=64, BLOCK_N2=64, B_TMA=True),
    # Mixtral's 256-token GEMM1: eight warps through TMA step one chunk at a time
    "tma-eight-warps": dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=2 * 64, num_warps=8, num_stages=4,
                            B_TMA=True),
    # the decode entries that load through pointers: chunks at each load's offsets
    "pointers-decode": dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=2 * 64, num_warps=4, num_stages=4),
    "pointers-tails": dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=64, num_warps=4, num_stages=3,
                           TAIL_M=16),
}  # fmt: skip


@pytest.mark.parametrize("width", [64, 128])
@pytest.mark.parametrize("tile", GPU_PATH_TILES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_path_from_chunks_on_gpu_matches_the_weights_as_stored(monkeypatch, tile, dtype, width):
    """Weights in K chunks (``chunk_weights``) on the whole path, TMA and wgmma included: bit for
    bit as the same tiles in steps of at most one chunk on the weights as stored."""
    seed = zlib.crc32(f"chunked gpu path {tile} {dtype} {width}".encode())
    path_from_chunks_matches(monkeypatch, GPU_PATH_TILES[tile], dtype, "cuda", (192, 320),
                             (1, 37, 300, 560), seed, width=width)  # fmt: skip


@pytest.mark.parametrize("width", [64, 128])
@pytest.mark.parametrize("path", ["expert_programs", "token_sum"])
@pytest.mark.parametrize("activation", ["silu", "swigluoai"])
def test_decode_paths_from_chunks_on_gpu(monkeypatch, path, activation, width):
    """The one-program path (two chunks a K step) and GEMM2 in token order on K chunks, bf16,
    bit for bit as on the weights as stored."""
    from moekit.experts import triton_experts

    seed = zlib.crc32(f"chunked gpu {path} {activation} {width}".encode())
    if path == "token_sum":
        monkeypatch.setattr(triton_experts, "token_sum_gemm2", lambda *_: True)
        tile, counts = dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=128, num_stages=4), (2, 8)
    else:
        monkeypatch.setattr(triton_experts, "EXPERT_PROGRAMS_MAX_ROWS", 64)
        tile = dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=128, num_stages=4, EXPERT_PROGRAMS=True)
        counts = (9, 200)
    path_from_chunks_matches(monkeypatch, tile, torch.bfloat16, "cuda", (256, 320), counts, seed,
                             activation=activation, width=width)  # fmt: skip
