"""Seeded problems and the reference comparison shared by the experts tests."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from moekit.experts import fused_experts
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
        device: str = "cpu") -> torch.Tensor:  # fmt: skip
    """``fused_experts`` on ``problem`` rounded to ``dtype``, on ``device``; the output on the CPU."""
    t = {k: v.to(device) if isinstance(v, torch.Tensor) else v
         for k, v in as_tensors(problem, dtype).items()}  # fmt: skip
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


def read_weights_from_chunks(monkeypatch) -> list[str]:
    """Both GEMM launchers patched to read their weights from ``chunk_weights`` of them; returns
    the list the patched launchers append ``"gemm1"``/``"gemm2"`` to where chunks can serve
    (TMA, K steps of whole chunks)."""
    from moekit.experts._triton_impl import gate_up_gemm, grouped_gemm
    from moekit.experts._triton_impl.weight_descriptor import CHUNK, chunk_weights

    launches: list[str] = []
    gate_up, grouped = gate_up_gemm.invoke_gate_up_gemm, grouped_gemm.invoke_grouped_gemm

    def served(name: str, config) -> None:  # type: ignore[no-untyped-def]
        if config.B_TMA and config.BLOCK_K % CHUNK == 0:
            launches.append(name)

    def gate_up_from_chunks(a, w13, *args, **kwargs):
        served("gemm1", args[5])
        return gate_up(a, w13, *args, w13_chunks=chunk_weights(w13), **kwargs)

    def grouped_from_chunks(a, b, *args, **kwargs):
        served("gemm2", args[5])
        return grouped(a, b, *args, b_chunks=chunk_weights(b), **kwargs)

    monkeypatch.setattr(gate_up_gemm, "invoke_gate_up_gemm", gate_up_from_chunks)
    monkeypatch.setattr(grouped_gemm, "invoke_grouped_gemm", grouped_from_chunks)
    return launches


def path_from_chunks_matches(monkeypatch, tile: dict, dtype: torch.dtype, device: str,
                              sizes: tuple[int, int], token_counts: tuple[int, ...],
                              seed: int) -> None:  # fmt: skip
    """``tile`` (``GemmConfig`` fields) on the whole path with the weights read from their chunks
    against the same tiles in steps of one chunk on the weights as stored: bit for bit, and
    against the reference; ``sizes`` is (hidden, inter)."""
    from moekit.experts._triton_impl.configs import GemmConfig
    from moekit.experts._triton_impl.weight_descriptor import CHUNK

    config = GemmConfig(**tile)
    for num_tokens in token_counts:
        problem = make_problem(seed + num_tokens, num_tokens, 8, 2, *sizes, "silu", bias=True)
        # the weights as stored take one chunk a step: a step of two chunks is two products
        use_config(monkeypatch, dataclasses.replace(config, BLOCK_K=CHUNK, BLOCK_K2=CHUNK))
        want = run(problem, dtype, "triton", device=device)
        use_config(monkeypatch, config)
        with monkeypatch.context() as patch:
            launches = read_weights_from_chunks(patch)
            got = run(problem, dtype, "triton", device=device)
        assert launches == ["gemm1", "gemm2"], f"chunks not read: {launches}, seed={seed}"
        assert torch.equal(got, want), f"{num_tokens} tokens, seed={seed}"
        assert_matches(got, reference(problem, dtype), dtype, seed)
