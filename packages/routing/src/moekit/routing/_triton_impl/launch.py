"""Launch of the routing kernel: tile shape and warps per problem size."""

from __future__ import annotations

import torch
import triton

from moekit.routing._backend import interpreter_enabled
from moekit.routing._checks import RoutingProblem
from moekit.routing._triton_impl.topk_kernel import routing_kernel

# A row's padded tile (groups and group sizes rounded up to powers of two) above this many
# elements would spill registers; the torch path (same results) takes such configurations.
MAX_ROW_TILE = 8192
_INTERPRETER_TILE_ELEMENTS = 1 << 14  # the interpreter pays per program, not per element


def tile_shape(problem: RoutingProblem) -> tuple[int, int]:
    """``(BLOCK_G, BLOCK_GS)``: one row's tile, groups x experts per group (one group of all
    experts when not grouped)."""
    group_size = problem.num_experts // problem.num_expert_group
    return triton.next_power_of_2(problem.num_expert_group), triton.next_power_of_2(group_size)


def triton_supports(problem: RoutingProblem) -> bool:
    block_g, block_gs = tile_shape(problem)
    return block_g * block_gs <= MAX_ROW_TILE


def launch_config(num_tokens: int, block_e: int) -> tuple[int, int, int]:
    """``(BLOCK_T, BLOCK_E, num_warps)`` for ``num_tokens`` rows of a ``block_e``-wide tile.

    From the H100 sweep (benchmarks/results/routing_sweep_h100.json): ~512 elements a program
    everywhere; small batches are latency-bound and want 2 warps (256 elements each), large
    ones are bound by the reductions and want 1 warp (fewer cross-warp exchanges)."""
    if interpreter_enabled():
        block_t = max(1, _INTERPRETER_TILE_ELEMENTS // block_e)
    else:
        block_t = max(1, 512 // block_e)
    block_t = min(block_t, triton.next_power_of_2(max(num_tokens, 1)))
    elements_per_warp = 256 if num_tokens <= 2048 else 512
    num_warps = max(1, min(8, block_t * block_e // elements_per_warp))
    return block_t, block_e, num_warps


def route_triton(
    problem: RoutingProblem,
    topk_weights: torch.Tensor | None = None,
    topk_ids: torch.Tensor | None = None,
    config: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(topk_weights float32 [T, k], topk_ids [T, k])`` from one kernel launch, written into
    the given contiguous outputs if any (the tests poison them first). ``config`` overrides
    ``(BLOCK_T, num_warps)`` for the launch-config sweep of the benchmark."""
    num_tokens, num_experts = problem.logits.shape
    block_g, block_gs = tile_shape(problem)
    device = problem.logits.device
    shape = (num_tokens, problem.top_k)
    if topk_weights is None:
        topk_weights = torch.empty(shape, dtype=torch.float32, device=device)
    if topk_ids is None:
        topk_ids = torch.empty(shape, dtype=problem.indices_type, device=device)
    if num_tokens == 0:
        return topk_weights, topk_ids
    block_t, _, num_warps = launch_config(num_tokens, block_g * block_gs)
    if config is not None:
        block_t, num_warps = config
    bias = problem.bias if problem.bias is not None else topk_weights  # never read
    routing_kernel[(triton.cdiv(num_tokens, block_t),)](
        problem.logits, bias, topk_weights, topk_ids,
        num_tokens, problem.logits.stride(0), problem.routed_scaling_factor,
        TOP_K=problem.top_k, SIGMOID=problem.scoring_func == "sigmoid",
        HAS_BIAS=problem.bias is not None, RENORMALIZE=problem.renormalize,
        GROUPED=problem.grouped, NUM_GROUPS=problem.num_expert_group,
        GROUP_SIZE=num_experts // problem.num_expert_group, TOPK_GROUP=problem.topk_group,
        BLOCK_T=block_t, BLOCK_G=block_g, BLOCK_GS=block_gs,
        BLOCK_K=triton.next_power_of_2(problem.top_k),
        num_warps=num_warps,
    )  # fmt: skip
    return topk_weights, topk_ids
