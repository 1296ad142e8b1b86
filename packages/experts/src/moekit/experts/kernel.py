"""``FusedMoEKernel``: runs prepare -> experts -> finalize with the right workspaces."""

from __future__ import annotations

import torch

from moekit.experts._checks import check_experts_call
from moekit.experts.modular_kernel import (
    FusedMoEExperts,
    FusedMoEExpertsModular,
    FusedMoEPrepareAndFinalize,
    FusedMoEPrepareAndFinalizeModular,
)
from moekit.experts.topk_weight_and_reduce import TopKWeightAndReduce, TopKWeightAndReduceNoOP
from moekit.experts.weight_chunks import is_chunked


def allocate_workspace(shape: tuple[int, ...], device: torch.device,
                       dtype: torch.dtype) -> torch.Tensor:  # fmt: skip
    """Uninitialised memory for workspaces and outputs (the tests poison it)."""
    return torch.empty(shape, device=device, dtype=dtype)


class FusedMoEKernel(torch.nn.Module):
    """One fused-MoE call built from a prepare/finalize and an experts object.

    Both must be Modular (Monolithic pairs are not implemented yet) and share an activation
    format, else ``ValueError`` at construction. With ``chunk_size``, experts that support
    chunking see at most that many tokens per call, so workspaces stay bounded on huge prefills.
    """

    def __init__(self, prepare_finalize: FusedMoEPrepareAndFinalize, experts: FusedMoEExperts,
                 shared_experts: torch.nn.Module | None = None,
                 chunk_size: int | None = None) -> None:  # fmt: skip
        super().__init__()
        if not isinstance(prepare_finalize, FusedMoEPrepareAndFinalizeModular) or not isinstance(
            experts, FusedMoEExpertsModular
        ):
            raise ValueError(
                f"prepare_finalize ({type(prepare_finalize).__name__}) and experts "
                f"({type(experts).__name__}) must both be Modular"
            )
        if prepare_finalize.activation_format != experts.activation_format():
            raise ValueError(
                f"prepare_finalize produces {prepare_finalize.activation_format.value} but "
                f"experts expect {experts.activation_format().value}"
            )
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.prepare_finalize = prepare_finalize
        self.fused_experts = experts
        self.shared_experts = shared_experts
        self.chunk_size = chunk_size

    def forward(self, hidden_states: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor,
                topk_weights: torch.Tensor, topk_ids: torch.Tensor, activation: str = "silu",
                global_num_experts: int = -1, expert_map: torch.Tensor | None = None,
                apply_router_weight_on_input: bool = False, *, check_ids: bool = True,
                ) -> torch.Tensor:  # fmt: skip
        """``[M, K]``: ``sum_j w[t, j] * W2[e] @ act(W13[e] @ x[t])`` (+ shared experts).

        ``hidden_states [M, K]``, ``w1 [E_local, N, K]``, ``w2 [E_local, K, N']``, ``topk_*
        [M, k]`` with global ids (``-1`` skips a slot). ``w1`` and ``w2`` may instead both be
        stored in K chunks (``chunk_weights``) where the experts take them
        (``supports_chunked_weights``; else ``TypeError``). ``check_ids`` reads the ids once to
        refuse ids ``>= global_num_experts`` (a host sync: turn it off in CUDA-graph capture).
        """
        quant = self.fused_experts.quant_config
        act, global_num_experts = check_experts_call(
            hidden_states, w1, w2, topk_weights, topk_ids, activation, global_num_experts,
            expert_map, apply_router_weight_on_input, quant.w1_bias, quant.w2_bias, check_ids,
        )  # fmt: skip
        if is_chunked(w1) and not self.fused_experts.supports_chunked_weights():
            raise TypeError(
                f"w1, w2: {type(self.fused_experts).__name__} takes weights [E, N, K], not K "
                "chunks (chunk_weights); TritonExperts and BatchedTritonExperts read chunks"
            )
        num_tokens = hidden_states.shape[0]
        output = allocate_workspace(tuple(hidden_states.shape), hidden_states.device,
                                    hidden_states.dtype)  # fmt: skip
        # A prepare/finalize that exchanges tokens between ranks runs collectives: every rank
        # must make the same calls, with or without tokens, in one chunk.
        collective = self.prepare_finalize.is_collective
        if num_tokens > 0 or collective:
            step = max(num_tokens, 1)
            if (self.chunk_size is not None and self.fused_experts.supports_chunking()
                    and not collective):  # fmt: skip
                step = self.chunk_size
            for start in range(0, max(num_tokens, 1), step):
                rows = slice(start, min(start + step, num_tokens))
                self._run_chunk(output[rows], hidden_states[rows], w1, w2, topk_weights[rows],
                                topk_ids[rows], act, global_num_experts, expert_map,
                                apply_router_weight_on_input)  # fmt: skip
        if self.shared_experts is not None:
            output = output + self.shared_experts(hidden_states)
        return output

    def _run_chunk(self, output, hidden_states, w1, w2, topk_weights, topk_ids, activation,
                   global_num_experts, expert_map, apply_router_weight_on_input) -> None:  # fmt: skip
        experts = self.fused_experts
        a1q, a1q_scale, meta, ids, weights = self.prepare_finalize.prepare(
            hidden_states, topk_weights, topk_ids, global_num_experts, expert_map,
            apply_router_weight_on_input, experts.quant_config,
        )  # fmt: skip
        ids = topk_ids if ids is None else ids
        weights = topk_weights if weights is None else weights
        num_local, num_tokens, n, k, top_k = experts.moe_problem_size(a1q, w1, w2, ids)
        shape13, shape2, out_shape = experts.workspace_shapes(
            num_tokens, n, k, top_k, global_num_experts, num_local, meta, activation
        )
        device, dtype = a1q.device, a1q.dtype
        workspace13 = allocate_workspace(shape13, device, dtype)
        workspace2 = allocate_workspace(shape2, device, dtype)
        reduce_impl = experts.finalize_weight_and_reduce_impl()
        if self._experts_write_output(reduce_impl, output, out_shape, dtype):
            fused_out = output  # no [M, K] copy in finalize: 2-9 µs of a decode call on an H100
        else:
            fused_out = allocate_workspace(out_shape, device, dtype)
        if a1q.shape[0] > 0:  # a dispatching prepare may leave this rank no rows
            experts.apply(fused_out, a1q, w1, w2, weights, ids, activation, global_num_experts,
                          expert_map, a1q_scale, None, workspace13, workspace2, meta,
                          apply_router_weight_on_input)  # fmt: skip
        self.prepare_finalize.finalize(output, fused_out, weights, ids,
                                       apply_router_weight_on_input, reduce_impl)  # fmt: skip

    def _experts_write_output(self, reduce_impl: TopKWeightAndReduce, output: torch.Tensor,
                              out_shape: tuple[int, ...], dtype: torch.dtype) -> bool:  # fmt: skip
        """Whether the experts' output can be ``output`` itself: the finalize only applies a
        ``NoOP`` reduce (copy unless same tensor) to rows left in place, and ``output`` has the
        experts' output shape and dtype, contiguous."""
        return (
            self.prepare_finalize.finalizes_in_place
            and isinstance(reduce_impl, TopKWeightAndReduceNoOP)
            and tuple(out_shape) == tuple(output.shape)
            and output.dtype == dtype
            and output.is_contiguous()
        )
