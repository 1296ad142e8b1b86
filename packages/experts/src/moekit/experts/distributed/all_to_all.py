"""``AllToAllPrepareAndFinalize``: dispatch tokens to the ranks owning their experts, combine
the partial outputs back, over ``torch.distributed`` (NCCL on GPUs, gloo on CPUs)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from moekit.experts.modular_kernel import (
    FusedMoEActivationFormat,
    FusedMoEPrepareAndFinalizeModular,
)
from moekit.experts.topk_weight_and_reduce import (
    TopKWeightAndReduceContiguous,
    TopKWeightAndReduceDelegate,
)


@dataclass
class _Dispatch:
    """What finalize needs from prepare: which local token each sent row was, and the splits."""

    token_of_row: torch.Tensor  # int64 [rows sent], local token index, grouped by destination
    rank_of_row: torch.Tensor  # int64 [rows sent], the destination of each row
    send_splits: list[int]
    recv_splits: list[int]


def _collective_error(rank: int, error: Exception) -> RuntimeError:
    return RuntimeError(
        f"expert-parallel all-to-all failed on rank {rank} (a peer may have died, or timed out "
        f"under the process group's timeout): {error}"
    )


class AllToAllPrepareAndFinalize(FusedMoEPrepareAndFinalizeModular):
    """Standard format across the ranks of ``group``.

    ``prepare`` sends each token once to every rank that owns at least one of its experts, with
    its ``topk_ids`` and ``topk_weights`` (the receiver skips the slots it does not own through
    its ``expert_map``). Counts are exchanged first, then ``all_to_all_single`` with uneven
    splits. ``finalize`` sends each rank's weighted partial sums back and adds them per token,
    so the output is fully reduced on every rank for its own tokens.

    Args:
        group: the expert-parallel process group (``None``: the default group).
        expert_owner: int ``[global_num_experts]``, the rank holding each (physical) expert,
            the same on every rank (see :func:`expert_owners`).

    The payload goes in the hidden states' dtype; on gloo, tensors must be on the CPU, on
    NCCL on this rank's GPU. A failed or timed-out collective raises a ``RuntimeError`` that
    names this rank.
    """

    is_collective = True

    def __init__(self, group: dist.ProcessGroup | None, expert_owner: torch.Tensor) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialised: call init_process_group")
        if not isinstance(expert_owner, torch.Tensor) or expert_owner.dim() != 1:
            raise TypeError("expert_owner must be a 1-D integer torch.Tensor")
        self.group = group
        self.world_size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        owner = expert_owner.to(torch.int64)
        if owner.numel() and (int(owner.min()) < 0 or int(owner.max()) >= self.world_size):
            raise ValueError(f"expert_owner must hold ranks in [0, {self.world_size}), got values "
                             f"in [{int(owner.min())}, {int(owner.max())}]")  # fmt: skip
        self.expert_owner = owner
        self._owner_on: dict[torch.device, torch.Tensor] = {}
        self._dispatch: _Dispatch | None = None

    @property
    def activation_format(self) -> FusedMoEActivationFormat:
        return FusedMoEActivationFormat.Standard

    def num_dispatchers(self) -> int:
        return self.world_size

    def output_is_reduced(self) -> bool:
        return True

    # --- dispatch ----------------------------------------------------------------------------

    def _plan(self, topk_ids: torch.Tensor) -> tuple[torch.Tensor, list[int], list[int]]:
        """Rows to send (token indices grouped by destination rank) and both split lists."""
        owner = self._owner_on.get(topk_ids.device)
        if owner is None:  # copied to the device once, not per forward
            owner = self._owner_on[topk_ids.device] = self.expert_owner.to(topk_ids.device)
        valid = (topk_ids >= 0) & (topk_ids < owner.numel())
        dest = torch.where(valid, owner[topk_ids.long().clamp(0, max(owner.numel() - 1, 0))], -1)
        wanted = torch.zeros(topk_ids.shape[0], self.world_size, dtype=torch.bool,
                             device=topk_ids.device)  # fmt: skip
        rows, cols = torch.nonzero(dest >= 0, as_tuple=True)
        wanted[rows, dest[rows, cols]] = True
        rank_major = wanted.t().nonzero(as_tuple=True)  # (rank, token), tokens ascending per rank
        token_of_row = rank_major[1]
        send_counts = wanted.sum(dim=0).to(torch.int64)
        recv_counts = torch.empty_like(send_counts)
        try:
            dist.all_to_all_single(recv_counts, send_counts, group=self.group)
        except RuntimeError as error:
            raise _collective_error(self.rank, error) from error
        return token_of_row, send_counts.tolist(), recv_counts.tolist()

    def _exchange(self, tensor: torch.Tensor, recv_rows: int, recv_splits: list[int],
                  send_splits: list[int], async_op: bool):  # type: ignore[no-untyped-def]  # fmt: skip
        received = torch.empty((recv_rows, *tensor.shape[1:]), dtype=tensor.dtype,
                               device=tensor.device)  # fmt: skip
        try:
            work = dist.all_to_all_single(received, tensor.contiguous(), recv_splits, send_splits,
                                          group=self.group, async_op=async_op)  # fmt: skip
        except RuntimeError as error:
            raise _collective_error(self.rank, error) from error
        return received, work

    def _start_prepare(self, a1, topk_weights, topk_ids, apply_router_weight_on_input,
                       async_op):  # type: ignore[no-untyped-def]  # fmt: skip
        if apply_router_weight_on_input:
            a1 = a1 * topk_weights.to(a1.dtype)  # top_k == 1
        token_of_row, send_splits, recv_splits = self._plan(topk_ids)
        rank_of_row = torch.repeat_interleave(
            torch.arange(self.world_size, device=token_of_row.device),
            torch.tensor(send_splits, device=token_of_row.device),
        )
        self._dispatch = _Dispatch(token_of_row, rank_of_row, send_splits, recv_splits)
        rows = sum(recv_splits)
        works = []
        payload = []
        for tensor in (a1[token_of_row], topk_ids[token_of_row], topk_weights[token_of_row]):
            received, work = self._exchange(tensor, rows, recv_splits, send_splits, async_op)
            payload.append(received)
            works.append(work)
        return payload, works

    def prepare(self, a1, topk_weights, topk_ids, num_experts, expert_map,
                apply_router_weight_on_input, quant_config):  # fmt: skip
        (x, ids, weights), _ = self._start_prepare(a1, topk_weights, topk_ids,
                                                   apply_router_weight_on_input, False)  # fmt: skip
        return x, None, None, ids, weights

    def prepare_async(self, a1, topk_weights, topk_ids, num_experts, expert_map,
                      apply_router_weight_on_input, quant_config):  # type: ignore[override]  # fmt: skip
        """``(hook, receiver)``: the counts are exchanged now (the splits need them), the
        payload in flight; ``hook()`` waits for it, ``receiver()`` returns ``prepare``'s
        result (waiting if the hook was not called)."""
        (x, ids, weights), works = self._start_prepare(a1, topk_weights, topk_ids,
                                                       apply_router_weight_on_input, True)  # fmt: skip

        def hook() -> None:
            for work in works:
                work.wait()

        def receiver():  # type: ignore[no-untyped-def]
            hook()
            return x, None, None, ids, weights

        return hook, receiver

    # --- combine -----------------------------------------------------------------------------

    def _start_finalize(self, fused_expert_output, topk_weights, topk_ids,
                        apply_router_weight_on_input, weight_and_reduce_impl, async_op):  # type: ignore[no-untyped-def]  # fmt: skip
        dispatch = self._dispatch
        if dispatch is None:
            raise RuntimeError("finalize was called before prepare")
        if isinstance(weight_and_reduce_impl, TopKWeightAndReduceDelegate):
            weight_and_reduce_impl = TopKWeightAndReduceContiguous()
        rows = fused_expert_output.shape[0]
        partial = torch.empty((rows, fused_expert_output.shape[-1]),
                              dtype=fused_expert_output.dtype, device=fused_expert_output.device)  # fmt: skip
        partial = weight_and_reduce_impl.apply(partial, fused_expert_output, topk_weights,
                                               topk_ids, apply_router_weight_on_input)  # fmt: skip
        back, work = self._exchange(partial, len(dispatch.token_of_row), dispatch.send_splits,
                                    dispatch.recv_splits, async_op)  # fmt: skip
        return back, work, dispatch

    def _combine(self, output: torch.Tensor, back: torch.Tensor, dispatch: _Dispatch) -> None:
        """Each token's partials placed per source rank, then summed in rank order: the same
        sum on every run (an index_add on a GPU would add in a varying order)."""
        by_rank = torch.zeros((output.shape[0], self.world_size, output.shape[1]),
                              dtype=torch.float32, device=output.device)  # fmt: skip
        by_rank[dispatch.token_of_row, dispatch.rank_of_row] = back.float()
        output.copy_(by_rank.sum(dim=1))

    def finalize(self, output, fused_expert_output, topk_weights, topk_ids,
                 apply_router_weight_on_input, weight_and_reduce_impl):  # fmt: skip
        back, _, dispatch = self._start_finalize(fused_expert_output, topk_weights, topk_ids,
                                                 apply_router_weight_on_input,
                                                 weight_and_reduce_impl, False)  # fmt: skip
        self._combine(output, back, dispatch)
        self._dispatch = None

    def finalize_async(self, output, fused_expert_output, topk_weights, topk_ids,
                       apply_router_weight_on_input, weight_and_reduce_impl
                       ):  # type: ignore[no-untyped-def, override]  # fmt: skip
        """``(hook, receiver)``: the partial sums in flight; ``receiver()`` adds them into
        ``output``."""
        back, work, dispatch = self._start_finalize(fused_expert_output, topk_weights, topk_ids,
                                                    apply_router_weight_on_input,
                                                    weight_and_reduce_impl, True)  # fmt: skip
        self._dispatch = None

        def hook() -> None:
            work.wait()

        def receiver() -> None:
            hook()
            self._combine(output, back, dispatch)

        return hook, receiver
