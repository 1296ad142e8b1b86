"""Seeded problems and the reference comparison shared by the experts tests."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from moekit.experts import chunk_weights, fused_experts
from moekit.reference import experts as ref

TOLERANCE = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 2e-2}  # bf16: GPU only


def make_problem(seed: int, num_tokens: int, num_experts: int, top_k: int, hidden: int,
                 inter: int, activation: str = "silu", *, bias: bool = False,
                 expert_map: np.ndarray | None = None) -> dict:  # fmt: skip
    """Inputs scaled by 1/10 as in vLLM's tests; ids distinct per token, a few set to -1."""
    rng = np.random.default_rng(seed)
    n = 2 * inter if activation in ref.GATED else inter
    num_global = num_experts if expert_map is None else len(expert_map)
    ids = np.stack([rng.permutation(num_global)[:top_k] for _ in range(num_tokens)])
    ids = ids.reshape(num_tokens, top_k).astype(np.int32)
    if num_tokens > 2:
        ids[1, 0] = -1
    return dict(
        hidden_states=rng.standard_normal((num_tokens, hidden)) / 10,
        w1=rng.standard_normal((num_experts, n, hidden)) / 10,
        w2=rng.standard_normal((num_experts, hidden, inter)) / 10,
        topk_weights=rng.random((num_tokens, top_k)).astype(np.float32),
        topk_ids=ids,
        w1_bias=rng.standard_normal((num_experts, n)) / 10 if bias else None,
        w2_bias=rng.standard_normal((num_experts, hidden)) / 10 if bias else None,
        expert_map=expert_map,
        activation=activation,
    )


def reference(problem: dict, dtype: torch.dtype, on_input: bool = False) -> np.ndarray:
    """The NumPy result on the inputs rounded to ``dtype``."""
    rounded = {
        k: (torch.tensor(v).to(dtype).double().numpy() if k in ("hidden_states", "w1", "w2",
            "w1_bias", "w2_bias") and v is not None else v)
        for k, v in problem.items()
    }  # fmt: skip
    return ref.fused_experts(
        rounded["hidden_states"], rounded["w1"], rounded["w2"], problem["topk_weights"],
        problem["topk_ids"], problem["activation"], problem["expert_map"], None, on_input,
        rounded["w1_bias"], rounded["w2_bias"],
    )  # fmt: skip


def as_tensors(problem: dict, dtype: torch.dtype) -> dict:
    out = {}
    for key, value in problem.items():
        if value is None or key == "activation":
            out[key] = value
        elif key in ("topk_ids", "expert_map"):
            out[key] = torch.tensor(value, dtype=torch.int32)
        elif key == "topk_weights":
            out[key] = torch.tensor(value)
        else:
            out[key] = torch.tensor(value).to(dtype)
    return out


def assert_matches(got: torch.Tensor, want: np.ndarray, dtype: torch.dtype, seed: int) -> None:
    got_np = got.float().numpy()
    assert np.isfinite(got_np).all(), f"non-finite output (unwritten rows?) seed={seed}"
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(got_np, want, atol=tol, rtol=tol, err_msg=f"seed={seed}")


def run(problem: dict, dtype: torch.dtype, backend: str, on_input: bool = False,
        device: str = "cpu", chunk_width: int = 0) -> torch.Tensor:  # fmt: skip
    """``fused_experts`` on ``problem`` rounded to ``dtype``, on ``device``, with the weights in
    K chunks of ``chunk_width`` columns (``chunk_weights``) where given; the output on the CPU."""
    t = {k: v.to(device) if isinstance(v, torch.Tensor) else v
         for k, v in as_tensors(problem, dtype).items()}  # fmt: skip
    if chunk_width:
        t["w1"], t["w2"] = chunk_weights(t["w1"], chunk_width), chunk_weights(t["w2"], chunk_width)
    return fused_experts(
        t["hidden_states"], t["w1"], t["w2"], t["topk_weights"], t["topk_ids"],
        activation=t["activation"], expert_map=t["expert_map"], w1_bias=t["w1_bias"],
        w2_bias=t["w2_bias"], apply_router_weight_on_input=on_input, backend=backend,
    ).cpu()  # fmt: skip


def use_config(monkeypatch, config) -> None:
    """Make the Triton experts run ``config`` (a ``GemmConfig``) whatever the tables say."""
    from moekit.experts import triton_experts

    monkeypatch.setattr(triton_experts, "get_config", lambda *args: config)


def grouped_gemm_reference(a: np.ndarray, b: np.ndarray, bias: np.ndarray,
                           weights: np.ndarray | None, local: np.ndarray) -> np.ndarray:  # fmt: skip
    """What ``invoke_grouped_gemm`` writes for per-slot rows ``a``: row ``slot`` is
    ``(a[slot] @ b[e].T + bias[e]) * weights[slot]`` for its local expert ``e = local[slot]``, and
    zeros where ``e`` is ``-1`` (not on this rank)."""
    want = np.zeros((a.shape[0], b.shape[1]), dtype=np.float32)
    for slot, expert in enumerate(local):
        if expert >= 0:
            want[slot] = a[slot] @ b[expert].T + bias[expert]
            if weights is not None:
                want[slot] *= weights[slot]
    return want


def path_from_chunks_matches(monkeypatch, tile: dict, dtype: torch.dtype, device: str,
                              sizes: tuple[int, int], token_counts: tuple[int, ...], seed: int,
                              activation: str = "silu", backend: str = "triton",
                              width: int = 64) -> None:  # fmt: skip
    """``tile`` (``GemmConfig`` fields) on the whole path with the weights in K chunks of
    ``width`` columns (``chunk_weights``) against the weights as stored: bit for bit, and
    against the reference; ``sizes`` is (hidden, inter). Through TMA each product spans at
    most one chunk (a step of two chunks is two products), so there the weights as stored take
    steps of at most one chunk (as the one-program path does with chunks)."""
    from moekit.experts._triton_impl import expert_programs
    from moekit.experts._triton_impl.configs import GemmConfig

    config = GemmConfig(**tile)
    for num_tokens in token_counts:
        problem = make_problem(seed + num_tokens, num_tokens, 8, 2, *sizes, activation,
                               bias=True)  # fmt: skip
        with monkeypatch.context() as patch:
            twin = config
            if config.B_TMA:
                twin = dataclasses.replace(config, BLOCK_K=min(config.BLOCK_K, width),
                                           BLOCK_K2=min(config.BLOCK_K2 or config.BLOCK_K, width))  # fmt: skip
            use_config(patch, twin)
            patch.setattr(expert_programs, "BLOCK_K1", width)
            patch.setattr(expert_programs, "BLOCK_K2", width)
            want = run(problem, dtype, backend, device=device)
        with monkeypatch.context() as patch:
            use_config(patch, config)
            got = run(problem, dtype, backend, device=device, chunk_width=width)
        assert torch.equal(got, want), f"{num_tokens} tokens, seed={seed}"
        assert_matches(got, reference(problem, dtype), dtype, seed)
