"""The Triton experts: align, grouped GEMM1 with the activation fused, grouped GEMM2, top-k sum."""

from __future__ import annotations

import dataclasses

import torch

from moekit.align import (
    batched_moe_align_block_size,
    interpreter_enabled,
    moe_align_block_size,
    moe_sum,
    programmatic_launch_supported,
)
from moekit.experts._triton_impl.configs import GemmConfig, get_config
from moekit.experts._triton_impl.device import sm_count
from moekit.experts._triton_impl.row_cache import activated_rows_eviction, slot_rows_eviction
from moekit.experts._triton_impl.tile_source import TileSource
from moekit.experts.activation import MoEActivation, adjust_N_for_activation
from moekit.experts.modular_kernel import FusedMoEActivationFormat, FusedMoEExpertsModular
from moekit.experts.topk_weight_and_reduce import (
    TopKWeightAndReduceDelegate,
    TopKWeightAndReduceNoOP,
)
from moekit.experts.weight_chunks import experts_and_rows, is_chunked, table_chunk_width


def _gemms():  # type: ignore[no-untyped-def]
    """The two Triton GEMM launchers and the aligned-order row copy, imported on first use so
    that ``moekit.experts`` (and its torch path) imports without Triton."""
    try:
        from moekit.experts._triton_impl.gate_up_gemm import invoke_gate_up_gemm
        from moekit.experts._triton_impl.gather_rows import gather_sorted_rows
        from moekit.experts._triton_impl.grouped_gemm import invoke_grouped_gemm, sum_counters
        from moekit.experts._triton_impl.token_sum_gemm import invoke_token_sum_gemm
    except ImportError as error:
        raise ImportError("the Triton experts need Triton: pip install 'moekit-experts[triton]' "
                          "(or use backend='torch')") from error  # fmt: skip
    return (invoke_gate_up_gemm, invoke_grouped_gemm, gather_sorted_rows, sum_counters,
            invoke_token_sum_gemm)  # fmt: skip


MAX_BLOCK_M = 128  # the largest tile height tables and the heuristic use
# Tiles from topk_ids (no alignment pass; each slot its own 16-row tile) for one token, and for
# up to IDS_TILES_MAX_TOKENS tokens while the slots number at most IDS_TILES_MAX_SLOTS_PER_EXPERT
# of the local experts: two slots then seldom share an expert, and those that do run side by
# side (IDS_TILES_GROUP_M), so they share the weight tiles in L2. The path saves a fixed few µs
# (the alignment launch and the sum's), while slots that share an expert cost more with every
# token. On the H100 (benchmarks/results/experts_small_batch_h100.json) 2-4 tokens gained up to
# 11% on the top-8 and top-4 shapes (DeepSeek-V3's one-GPU slice: -1.6% to +0.2%), and the path
# lost up to 1.1% on DeepSeek-V3 at 6 and 8 tokens.
IDS_TILES_MAX_TOKENS = 4
IDS_TILES_MAX_SLOTS_PER_EXPERT = 0.25
IDS_TILES_GROUP_M = 128  # the slots of any call on the path: 8 tokens of top-k up to 16
# Calls with tiles from topk_ids: GEMM2 sums the top-k slots itself, so the call is two launches
# (benchmarks turn it off to time the separate moe_sum launch against it).
FUSED_TOPK_SUM = True
# GEMM2 in token order with the top-k sum (``token_sum_gemm``) for calls of up to
# TOKEN_SUM_MAX_TOKENS tokens whose intermediate size (GEMM2's reduction) is at most
# TOKEN_SUM_MAX_INTER and whose grid has TOKEN_SUM_MIN_PROGRAMS programs of 16 columns: no per-slot
# rows, no sum, and GEMM1 then takes its tiles from topk_ids, so the call is two launches. Each
# slot reads its expert's weights itself, so slots that share an expert lean on L2, and short
# rows keep each program's chain of loads short. On the H100
# (benchmarks/results/experts_token_sum_h100.json) Qwen3-30B TP2 gained 1.4-10% at 2-8 tokens
# and DeepSeek-V3 TP4 0.1-3.6% at 1-8 (the H200: up to 14%); in token order every shape lost at
# 10 and 16 tokens, and the shapes with longer rows (Qwen3-30B, gpt-oss, DeepSeek-V3, Mixtral)
# lost at every count (experts_token_sum_screen_h100.json).
TOKEN_SUM_MAX_TOKENS = 8
TOKEN_SUM_MAX_INTER = 512
TOKEN_SUM_MIN_PROGRAMS = 256
# Every kernel of a call launches with programmatic dependent launch where the GPU has it: its
# programs first wait for the kernel before, and its launch overlaps that kernel's end. Each
# kernel but the last also lets the next one start early, except GEMM1 where GEMM2 has fewer
# than EARLY_START_MIN_PROGRAMS_PER_SM programs with rows per SM (about one wave) or runs in
# token order: there GEMM2's programs, resident before GEMM1 ends, probably crowd the SMs GEMM1
# freed first. On the H100 (benchmarks/results/experts_pdl_boundaries_h100.json) one token lost
# up to 15% with that early start where GEMM2 had 64-256 programs, and gained up to 4.1%
# without it; where GEMM2 had 896 or more, the early start was worth 0.0-0.4% more. Benchmarks
# turn it off to time plain launches.
PROGRAMMATIC_LAUNCH = True
EARLY_START_MIN_PROGRAMS_PER_SM = 4
# Both GEMMs as one program per local expert (``expert_programs``: no alignment pass, no boundary
# between the GEMMs, as many programs as active experts, each streaming its own weights once)
# where the table's entry asks for it (``EXPERT_PROGRAMS``) and the slots average at most
# EXPERT_PROGRAMS_MAX_ROWS per local expert: beyond, an expert's rows take taller blocks or a
# second pass, and the path lost (H200: 4-11% at 24-32 rows per expert; H100: 62% at 64). A
# program streams its expert's weights at most at about 50 GB/s (one SM's share), so the path
# also needs enough active experts to fill HBM: which entries ask for it depends on the device.
# Bit-identical to the aligned path; in whole calls (benchmarks/results/experts_expert_programs_*
# .json, NOTES levers 42 and 43) Qwen3-30B TP2 took 2-7% less time at 9-256 tokens on the H100,
# also on routing that favours some experts; on the H200 it lost 17% at 9 tokens (56 active
# experts) and 7-9% at 128-256 with the 64-row blocks that skewed routing needs, so the H200's
# entries cap it at 4 slots per expert (EXPERT_PROGRAMS_ROWS), where Qwen3-30B and its TP2 slice
# gained up to 8%; Qwen3-30B moved -1.5% to +1.4% on the H100; DeepSeek-V3 and its TP4 slice
# lost 2-13%.
EXPERT_PROGRAMS_MAX_ROWS = 16
# Whether calls on weights in K chunks (chunk_weights) take that path too, where their entry
# asks for it; otherwise they take the aligned path. Neither wins throughout: on the H200
# (benchmarks/results/experts_chunked_programs_h200.json, against the weights as stored on the
# path) Qwen3-30B at 16 tokens lost 11.6% on this path and 3.0% on the aligned one, its TP2
# slice 9.3% and 8.8% at 16 tokens, 1.9% and 4.2% at 64.
EXPERT_PROGRAMS_ON_CHUNKS = True


def token_sum_gemm2(num_tokens: int, hidden: int, inter: int) -> bool:
    """Whether GEMM2 runs in token order with the top-k sum (see ``TOKEN_SUM_MAX_TOKENS``)."""
    return (
        num_tokens <= TOKEN_SUM_MAX_TOKENS
        and inter <= TOKEN_SUM_MAX_INTER
        and num_tokens * -(-hidden // 16) >= TOKEN_SUM_MIN_PROGRAMS
    )


def gemm2_starts_early(num_slots: int, num_local_experts: int, slots_from_ids: bool,
                       block_m: int, n_tiles: int, device: torch.device) -> bool:  # fmt: skip
    """Whether GEMM1 lets GEMM2 start early (see ``EARLY_START_MIN_PROGRAMS_PER_SM``): GEMM2's
    programs with rows (one m-tile per slot from ``topk_ids``; at most one partly filled m-tile
    per expert beyond the full ones when aligned) times its ``n_tiles``."""
    m_tiles = (
        num_slots if slots_from_ids else min(num_slots, num_local_experts) + num_slots // block_m
    )
    return m_tiles * n_tiles >= EARLY_START_MIN_PROGRAMS_PER_SM * sm_count(device)


def expert_programs_serve(config: GemmConfig, num_slots: int, num_local_experts: int) -> bool:
    """Whether a call may take the one-program-per-expert path (see
    ``EXPERT_PROGRAMS_MAX_ROWS``; an entry's ``EXPERT_PROGRAMS_ROWS`` replaces that limit); it
    also needs the weights' descriptors."""
    most_rows = config.EXPERT_PROGRAMS_ROWS or EXPERT_PROGRAMS_MAX_ROWS
    return config.EXPERT_PROGRAMS and num_slots <= most_rows * num_local_experts


def tiles_from_ids(num_tokens: int, num_slots: int, num_local_experts: int) -> bool:
    """Whether a call skips the alignment pass (see ``IDS_TILES_MAX_TOKENS``)."""
    return num_tokens == 1 or (
        1 < num_tokens <= IDS_TILES_MAX_TOKENS
        and num_slots <= IDS_TILES_MAX_SLOTS_PER_EXPERT * num_local_experts
    )


def aligned_rows_bound(num_slots: int, num_local_experts: int) -> int:
    """Most aligned positions ``moe_align_block_size`` gives ``num_slots`` slots over
    ``num_local_experts`` experts with blocks of up to ``MAX_BLOCK_M`` rows."""
    return num_slots + num_local_experts * (MAX_BLOCK_M - 1)


class TritonExperts(FusedMoEExpertsModular):
    """Standard format. ``moe_align_block_size`` sorts the slots by local expert (non-local and
    ``-1`` slots dropped), GEMM1 with the activation in its epilogue (no weight; the float32
    accumulators are activated before the one rounding to the input dtype) -> GEMM2 (routed
    weight unless applied on the input) -> ``moe_sum`` skipping the dropped slots. Output already
    reduced (``NoOP``). A ``SORTED_ROWS`` table entry first copies the hidden states in the
    aligned order and keeps GEMM1's output in it, so both GEMMs read A as blocks of rows.

    A single token, or up to four whose slots number at most a quarter of the local experts
    (``IDS_TILES_MAX_TOKENS``), launches two kernels: no alignment pass (each slot is a
    tile of its own, its expert read from ``topk_ids``) and GEMM2 sums the top-k slots itself,
    in the same slot order and float32 as ``moe_sum``, so the result is the same. Up to eight
    tokens on slices with short expert rows (``token_sum_gemm2``) also launch two kernels: GEMM1
    with tiles from ``topk_ids``, then GEMM2 in token order with the top-k sum
    (``token_sum_gemm``), which rounds each slot row and adds the rows in slot order in float32
    too, but whose products add in another order than the MMA's. Where the table's entry asks
    for it (``expert_programs_serve``), both GEMMs run as one program per local expert, then
    ``moe_sum``: two launches, the same result bit for bit.

    ``w1`` and ``w2`` may both be stored in K chunks (``chunk_weights``): every path then reads
    the chunks, with the same result bit for bit on the GPU."""

    @classmethod
    def activation_format(cls) -> FusedMoEActivationFormat:
        return FusedMoEActivationFormat.Standard

    def supports_chunked_weights(self) -> bool:
        return True

    @classmethod
    def _supports_current_device(cls, device: torch.device) -> bool:
        return device.type == "cuda" or interpreter_enabled()

    def workspace_shapes(self, M, N, K, topk, global_num_experts, local_num_experts,
                         expert_tokens_meta, activation):  # fmt: skip
        # workspace13 holds GEMM2's per-slot rows, workspace2 the activated GEMM1 rows: one per
        # slot, or per aligned position for SORTED_ROWS entries where that room costs little
        middle_rows = aligned_rows_bound(M * topk, local_num_experts)
        if middle_rows > M * topk * 5 // 4:
            middle_rows = M * topk  # a SORTED_ROWS entry then allocates its own
        return (M, topk, K), (middle_rows, adjust_N_for_activation(N, activation)), (M, K)

    def finalize_weight_and_reduce_impl(self):
        return TopKWeightAndReduceNoOP()

    def apply(self, output, hidden_states, w1, w2, topk_weights, topk_ids, activation,
              global_num_experts, expert_map, a1q_scale, a2_scale, workspace13, workspace2,
              expert_tokens_meta, apply_router_weight_on_input):  # fmt: skip
        num_local, n = experts_and_rows(w1)
        k = hidden_states.shape[1]
        num_tokens, top_k = topk_ids.shape
        num_slots = num_tokens * top_k
        n_act = adjust_N_for_activation(n, activation)
        config = get_config(num_tokens, top_k, num_local, n, hidden_states.dtype,
                            hidden_states.device, interpreter_enabled(),
                            table_chunk_width(w1, w2))  # fmt: skip
        # before the first launch, so that no torch kernel sits inside the chain of launches
        weights = None if apply_router_weight_on_input else topk_weights.reshape(-1).float()
        pdl = PROGRAMMATIC_LAUNCH and programmatic_launch_supported(hidden_states.device)
        token_sum = token_sum_gemm2(num_tokens, k, n_act)
        from_ids = tiles_from_ids(num_tokens, num_slots, num_local)
        programs = (
            not (token_sum or from_ids)
            and (EXPERT_PROGRAMS_ON_CHUNKS or not is_chunked(w1))
            and expert_programs_serve(config, num_slots, num_local)
        )
        if programs and self._expert_programs(output, hidden_states, w1, w2, weights, topk_ids,
                                              activation, global_num_experts, expert_map,
                                              workspace13, workspace2, config, pdl):  # fmt: skip
            return
        if token_sum or from_ids:
            # Each slot fills its own 16-row tile: no alignment pass to launch. With several
            # tokens, every slot's tile of an n-tile runs side by side, so slots that share an
            # expert read its weights once from HBM. Such tiles have no aligned tail to fold.
            group_m = config.GROUP_M if num_tokens == 1 else IDS_TILES_GROUP_M
            config = dataclasses.replace(config.with_block_m(16), GROUP_M=group_m)
            tiles = TileSource(topk_ids=topk_ids.reshape(-1), expert_map=expert_map,
                               num_global_experts=global_num_experts)  # fmt: skip
        else:
            tiles = TileSource(*moe_align_block_size(
                topk_ids, config.BLOCK_M, global_num_experts, expert_map,
                ignore_invalid_experts=True, backend="triton", programmatic_launch=pdl,
            ))  # fmt: skip
        (invoke_gate_up_gemm, invoke_grouped_gemm, gather_sorted_rows, sum_counters,
         invoke_token_sum_gemm) = _gemms()  # fmt: skip
        sorted_rows = config.SORTED_ROWS and not tiles.slots_from_ids
        gemm2_config = config.gemm2()
        gemm2_early = pdl and not token_sum and gemm2_starts_early(
            num_slots, num_local, tiles.slots_from_ids, config.BLOCK_M,
            -(-k // gemm2_config.BLOCK_N), hidden_states.device,
        )  # fmt: skip
        counters = None
        if FUSED_TOPK_SUM and tiles.slots_from_ids and not token_sum:  # GEMM2 sums the top-k too
            counters = sum_counters(num_tokens, k, gemm2_config, hidden_states.device)
        if sorted_rows:  # every A tile of both GEMMs becomes one block of rows
            a1 = gather_sorted_rows(hidden_states, tiles, top_k, wait_prior=pdl, launch_next=True)
            if workspace2.numel() >= a1.shape[0] * n_act:
                activated = workspace2.view(-1)[: a1.shape[0] * n_act].view(-1, n_act)
            else:
                activated = hidden_states.new_empty(a1.shape[0], n_act)
        else:
            a1 = hidden_states
            activated = workspace2.view(-1)[: num_slots * n_act].view(num_slots, n_act)
        invoke_gate_up_gemm(a1, w1, activated, self.quant_config.w1_bias, tiles, top_k,
                            MoEActivation.parse(activation), config, a_rows_sorted=sorted_rows,
                            out_rows_sorted=sorted_rows, num_slots=num_slots,
                            counters=counters, wait_prior=pdl,
                            launch_next=gemm2_early)  # fmt: skip
        if token_sum:
            invoke_token_sum_gemm(activated, w2, output, self.quant_config.w2_bias, weights,
                                  topk_ids, expert_map, global_num_experts,
                                  wait_prior=pdl)  # fmt: skip
            return
        gemm2_out = workspace13.view(-1)[: num_slots * k].view(num_slots, k)
        invoke_grouped_gemm(activated, w2, gemm2_out, self.quant_config.w2_bias, weights, tiles,
                            1, gemm2_config, a_rows_sorted=sorted_rows,
                            summed=None if counters is None else (output, counters, top_k),
                            wait_prior=pdl, launch_next=counters is None,
                            c_eviction=slot_rows_eviction(
                                gemm2_out.numel() * gemm2_out.element_size(), num_local,
                                config.ROWS_DEFAULT_POLICY,
                            ))  # fmt: skip
        if counters is None:
            moe_sum(gemm2_out.view(num_tokens, top_k, k), output, topk_ids, expert_map,
                    backend="triton", programmatic_launch=pdl)  # fmt: skip

    def _expert_programs(self, output, hidden_states, w1, w2, weights, topk_ids, activation,
                         global_num_experts, expert_map, workspace13, workspace2, config,
                         pdl) -> bool:  # fmt: skip
        """The call as one program per local expert, then ``moe_sum``; False, with nothing
        launched, where the weights have no descriptors (``expert_weights``)."""
        from moekit.experts._triton_impl.expert_programs import (
            expert_weights,
            invoke_expert_programs,
        )

        activation = MoEActivation.parse(activation)
        descriptors = expert_weights(w1, w2, activation)
        if descriptors is None:
            return False
        num_local, n = experts_and_rows(w1)
        k = hidden_states.shape[1]
        num_tokens, top_k = topk_ids.shape
        num_slots = num_tokens * top_k
        n_act = adjust_N_for_activation(n, activation)
        activated = workspace2.view(-1)[: num_slots * n_act].view(num_slots, n_act)
        rows = workspace13.view(-1)[: num_slots * k].view(num_slots, k)
        invoke_expert_programs(
            hidden_states, descriptors, activated, rows, self.quant_config.w1_bias,
            self.quant_config.w2_bias, weights, topk_ids, expert_map, global_num_experts,
            num_local, activation,
            activated_eviction=activated_rows_eviction(config.ROWS_DEFAULT_POLICY),
            rows_eviction=slot_rows_eviction(rows.numel() * rows.element_size(), num_local,
                                             config.ROWS_DEFAULT_POLICY),
            wait_prior=pdl, launch_next=True,
        )  # fmt: skip
        # slots of no local expert have no row; moe_sum skips them
        moe_sum(rows.view(num_tokens, top_k, k), output, topk_ids, expert_map, backend="triton",
                programmatic_launch=pdl)  # fmt: skip
        return True


class BatchedTritonExperts(FusedMoEExpertsModular):
    """Batched format ``[E_local, max_tokens, K]``: ``batched_moe_align_block_size`` gives each
    expert's valid rows; the same grouped GEMMs run on the flattened rows. Weighting and
    reduction are the prepare/finalize's (``Delegate``). ``w1`` and ``w2`` may both be stored in
    K chunks (``chunk_weights``)."""

    @classmethod
    def activation_format(cls) -> FusedMoEActivationFormat:
        return FusedMoEActivationFormat.BatchedExperts

    def supports_chunked_weights(self) -> bool:
        return True

    @classmethod
    def _supports_current_device(cls, device: torch.device) -> bool:
        return device.type == "cuda" or interpreter_enabled()

    def supports_expert_map(self) -> bool:
        return False  # the batched layout is already local

    def workspace_shapes(self, M, N, K, topk, global_num_experts, local_num_experts,
                         expert_tokens_meta, activation):  # fmt: skip
        rows = self.max_num_tokens * self.num_dispatchers
        n_act = adjust_N_for_activation(N, activation)
        return ((local_num_experts, rows, K), (local_num_experts, rows, n_act),
                (local_num_experts, rows, K))  # fmt: skip

    def finalize_weight_and_reduce_impl(self):
        return TopKWeightAndReduceDelegate()

    def apply(self, output, hidden_states, w1, w2, topk_weights, topk_ids, activation,
              global_num_experts, expert_map, a1q_scale, a2_scale, workspace13, workspace2,
              expert_tokens_meta, apply_router_weight_on_input):  # fmt: skip
        num_local, rows, k = hidden_states.shape
        n = experts_and_rows(w1)[1]
        n_act = adjust_N_for_activation(n, activation)
        flat_rows = num_local * rows
        config = get_config(rows, 1, 1, n, hidden_states.dtype, hidden_states.device,
                            interpreter_enabled(), table_chunk_width(w1, w2))  # fmt: skip
        tiles = TileSource(*batched_moe_align_block_size(
            rows, config.BLOCK_M, expert_tokens_meta.expert_num_tokens, backend="triton"
        ))  # fmt: skip
        invoke_gate_up_gemm, invoke_grouped_gemm, *_ = _gemms()
        activated = workspace2.view(-1)[: flat_rows * n_act].view(flat_rows, n_act)
        invoke_gate_up_gemm(hidden_states.view(flat_rows, k), w1, activated,
                            self.quant_config.w1_bias, tiles, 1, MoEActivation.parse(activation),
                            config)  # fmt: skip
        invoke_grouped_gemm(activated, w2, output.view(flat_rows, k), self.quant_config.w2_bias,
                            None, tiles, 1, config.gemm2())  # fmt: skip
