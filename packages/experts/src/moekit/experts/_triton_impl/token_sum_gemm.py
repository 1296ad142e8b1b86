"""Launch of GEMM2 in token order with the top-k sum (see ``token_sum_gemm_kernel``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from moekit.experts._triton_impl.programmatic_launch import launch_options
from moekit.experts._triton_impl.token_sum_gemm_kernel import token_sum_gemm_kernel
from moekit.experts.weight_chunks import chunk_width, experts_and_rows, weight_strides

# Programs to aim for: enough to keep every SM's loads in flight on a 132-SM H100.
TARGET_PROGRAMS = 1024


@dataclass(frozen=True)
class TokenSumTile:
    """``BLOCK_N`` output columns and ``BLOCK_K`` reduction columns per step of one program;
    ``BLOCK_N = 0`` picks the widest power of two from 16 to 128 that still gives
    ``TARGET_PROGRAMS`` programs. Where ``K`` takes at most ``max_unrolled_steps`` steps of
    ``BLOCK_K``, the steps are unrolled without a branch per slot."""

    BLOCK_N: int = 0
    BLOCK_K: int = 128
    num_warps: int = 4
    max_unrolled_steps: int = 0  # K steps up to which the reduction is unrolled (0: never)

    def block_n(self, num_tokens: int, n: int) -> int:
        if self.BLOCK_N:
            return self.BLOCK_N
        block_n = 128
        while block_n > 16 and num_tokens * triton.cdiv(n, block_n) < TARGET_PROGRAMS:
            block_n //= 2
        return block_n


# Up to 512-wide rows unrolled: on the H100 that gained up to 9% against the loop where the path
# pays, and lost at most 0.3% (everywhere_loop in benchmarks/results/experts_token_sum_h100.json).
DEFAULT_TILE = TokenSumTile(max_unrolled_steps=4)


def invoke_token_sum_gemm(
    a: torch.Tensor,
    b: torch.Tensor,
    out: torch.Tensor,
    bias: torch.Tensor | None,
    topk_weights: torch.Tensor | None,
    topk_ids: torch.Tensor,
    expert_map: torch.Tensor | None,
    num_global_experts: int,
    tile: TokenSumTile | None = None,
    wait_prior: bool = False,
) -> None:
    """``out[t] = sum over j of round((a[t * k + j] @ b[e].T + bias[e]) * topk_weights[t, j])``
    for the local slots ``j`` of token ``t`` (``e`` their local expert), in slot order, in
    float32, then cast: the result of GEMM2 then ``moe_sum`` without the per-slot rows.

    ``a [num_tokens * k, K]`` (one activated row per slot), ``b [E, N, K]`` or its K chunks
    (``chunk_weights``),
    ``out [num_tokens, N]`` (its dtype is the one each slot row is rounded to), ``bias [E, N]``
    or None, ``topk_weights`` flat ``[num_tokens * k]`` float32 or None (no weighting),
    ``topk_ids [num_tokens, k]`` global ids (through ``expert_map`` when given; ``-1``, out of
    range and non-local ids are skipped); ``tile`` defaults to ``DEFAULT_TILE``.
    ``wait_prior`` (only where ``moekit.align.programmatic_launch_supported``, which the caller
    checks) launches it with programmatic dependent launch: its programs wait for the previous
    kernel first.
    """
    tile = DEFAULT_TILE if tile is None else tile
    topk_ids = topk_ids.contiguous()  # the kernel reads slot t * k + j at that offset
    num_tokens, top_k = topk_ids.shape
    n, k = experts_and_rows(b)[1], a.shape[1]
    if out.numel() == 0:
        return
    block_n = tile.block_n(num_tokens, n)
    grid = (num_tokens * triton.cdiv(n, block_n),)
    k_steps = triton.cdiv(k, tile.BLOCK_K)
    token_sum_gemm_kernel[grid](
        a, b, out, bias if bias is not None else out,
        topk_weights if topk_weights is not None else out,
        topk_ids, expert_map if expert_map is not None else topk_ids, num_global_experts,
        num_tokens, n, k,
        a.stride(0), a.stride(1), *weight_strides(b),
        bias.stride(0) if bias is not None else 0, out.stride(0), out.stride(1),
        HAS_MAP=expert_map is not None, TOP_K=top_k, MUL_ROUTED_WEIGHT=topk_weights is not None,
        HAS_BIAS=bias is not None, BLOCK_N=block_n, BLOCK_K=tile.BLOCK_K,
        K_STEPS=k_steps if k_steps <= tile.max_unrolled_steps else 0,
        B_CHUNK=chunk_width(b), WAIT_PRIOR=wait_prior,
        num_warps=tile.num_warps, **launch_options(wait_prior),
    )  # fmt: skip
