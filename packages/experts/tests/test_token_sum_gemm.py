"""GEMM2 in token order with the top-k sum (``token_sum_gemm``): the kernel against a NumPy
model of GEMM2's rounded slot rows summed in slot order, with skipped, remote and repeated
experts, a token with no local slot, and ragged tiles; the whole Triton path with it against the
reference and against the path that writes per-slot rows. Outputs start poisoned with NaN."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from helpers import assert_matches, grouped_gemm_reference, make_problem, reference, run

MAP = np.array([-1, 0, 1, -1, 2, 3, -1, -1], dtype=np.int32)  # 8 global, 4 local
IDS = np.array([  # 5 tokens x 3 slots, global ids
    [1, 4, 2],
    [-1, 4, 0],  # skipped and remote slots
    [4, 1, 4],  # one expert twice
    [0, 3, 7],  # no local slot: zeros
    [5, 8, 2],  # an id past the experts: skipped
], dtype=np.int32)  # fmt: skip


def token_sum_reference(a, b, bias, weights, local, top_k, dtype) -> np.ndarray:
    """Each local slot's GEMM2 row rounded to ``dtype``, summed per token in slot order in
    float32, rounded again."""
    rows = grouped_gemm_reference(a, b, bias, weights, local)
    rows = torch.tensor(rows).to(dtype).float().numpy()
    total = np.zeros((a.shape[0] // top_k, b.shape[1]), dtype=np.float32)
    for j in range(top_k):
        keep = local[j::top_k] >= 0
        total += np.where(keep[:, None], rows[j::top_k], np.float32(0))
    return torch.tensor(total).to(dtype).float().numpy()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("block_n", [16, 32, 0])  # 48 columns: three tiles, one and a half, auto
@pytest.mark.parametrize("unrolled", [False, True])  # K's three steps in a loop or unrolled
def test_token_sum_gemm_matches_the_model(dtype, with_bias, weighted, block_n, unrolled):
    from moekit.experts._triton_impl.token_sum_gemm import TokenSumTile, invoke_token_sum_gemm

    seed = zlib.crc32(f"token-sum{dtype}{with_bias}{weighted}{block_n}{unrolled}".encode())
    rng = np.random.default_rng(seed)
    num_local, n, k, top_k = 4, 48, 40, IDS.shape[1]  # K = 40: a ragged last step of 16
    a = (rng.standard_normal((IDS.size, k)) / 10).astype(np.float32)
    b = (rng.standard_normal((num_local, n, k)) / 10).astype(np.float32)
    bias = (rng.standard_normal((num_local, n)) / 10).astype(np.float32)
    weights = rng.random(IDS.size).astype(np.float32)
    a_t, b_t, bias_t = (torch.tensor(x).to(dtype) for x in (a, b, bias))
    out = torch.full((IDS.shape[0], n), float("nan"), dtype=dtype)
    invoke_token_sum_gemm(
        a_t, b_t, out, bias_t if with_bias else None,
        torch.tensor(weights) if weighted else None, torch.tensor(IDS),
        torch.tensor(MAP), len(MAP), TokenSumTile(BLOCK_N=block_n, BLOCK_K=16, max_unrolled_steps=3 if unrolled else 0),
    )  # fmt: skip
    ids = IDS.reshape(-1)
    local = np.where((ids >= 0) & (ids < len(MAP)), MAP[np.clip(ids, 0, len(MAP) - 1)], -1)
    want = token_sum_reference(
        a_t.double().numpy(), b_t.double().numpy(),
        bias_t.double().numpy() if with_bias else np.zeros_like(bias),
        weights if weighted else None, local, top_k, dtype,
    )  # fmt: skip
    assert (out[3] == 0).all(), f"a token with no local slot is not zero, seed={seed}"
    # float16: the float32 products may round a slot row to the neighbouring half
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    np.testing.assert_allclose(out.float().numpy(), want, atol=tol, rtol=tol,
                               err_msg=f"seed={seed}")  # fmt: skip


@pytest.mark.parametrize("activation", ["silu", "swigluoai", "gelu_no_mul"])
@pytest.mark.parametrize("num_tokens", [1, 3, 9])
def test_path_with_token_sum_matches_the_reference(monkeypatch, activation, num_tokens):
    from moekit.experts import triton_experts

    seed = zlib.crc32(f"token-sum-path{activation}{num_tokens}".encode())
    problem = make_problem(seed, num_tokens, 4, 3, 48, 24, activation, bias=True,
                           expert_map=MAP)  # fmt: skip
    results = {}
    for token_sum in (False, True):
        monkeypatch.setattr(triton_experts, "token_sum_gemm2", lambda *_, on=token_sum: on)
        results[token_sum] = run(problem, torch.float32, "triton")
    assert_matches(results[True], reference(problem, torch.float32), torch.float32, seed)
    np.testing.assert_allclose(results[True].numpy(), results[False].numpy(), atol=1e-5,
                               rtol=1e-5, err_msg=f"seed={seed}")  # fmt: skip


@pytest.mark.parametrize(("tokens", "hidden", "inter", "takes"), [
    (1, 7168, 512, True),  # DeepSeek-V3 TP4, one token: 448 programs
    (1, 2048, 384, False),  # Qwen3-30B TP2, one token: 128 programs are too few
    (2, 2048, 384, True),
    (8, 2048, 384, True),
    (9, 2048, 384, False),  # past TOKEN_SUM_MAX_TOKENS
    (4, 2048, 768, False),  # rows too long (Qwen3-30B)
])  # fmt: skip
def test_token_sum_rule(tokens, hidden, inter, takes):
    from moekit.experts.triton_experts import token_sum_gemm2

    assert token_sum_gemm2(tokens, hidden, inter) is takes
