"""``MoERunner``: one MoE layer as an engine runs it (router, expert weights, fused experts)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from moekit.align import Backend, resolve_backend
from moekit.experts.activation import MoEActivation
from moekit.experts.config import FusedMoEConfig, FusedMoEQuantConfig
from moekit.experts.functional import fused_experts
from moekit.experts.kernel import FusedMoEKernel
from moekit.experts.layer import checkpoint
from moekit.experts.modular_kernel import (
    FusedMoEActivationFormat,
    FusedMoEExpertsModular,
    FusedMoEPrepareAndFinalizeModular,
)
from moekit.experts.torch_experts import NaiveBatchedExperts, TorchExperts
from moekit.experts.triton_experts import BatchedTritonExperts, TritonExperts

if TYPE_CHECKING:
    from moekit.eplb import EplbState, Rearrangement
    from moekit.routing import Router


class MoERunner(nn.Module):
    """A fused-MoE layer; build it with :func:`~moekit.experts.FusedMoE`.

    ``forward(hidden_states [T, K], router_logits [T, E]) -> [T, K]``: the router picks
    ``top_k`` logical experts per token; with EPLB the ids become physical replicas and this
    pass's load is recorded; the fused experts run on this rank's experts; the routed output is
    scaled when ``apply_routed_scale_to_output``; the shared experts' output is added.

    With a ``process_group``, each rank passes its own tokens: they go to the ranks owning their
    experts and come back summed (:class:`~moekit.experts.distributed.AllToAllPrepareAndFinalize`),
    so the result is the layer's output for those tokens. With ``ep_size > 1`` and no process
    group, the result is this rank's partial sum (its experts, plus the shared experts on rank 0
    only), so the sum over the ranks is the layer's output.

    Parameters (NaN until loaded or set): ``w13_weight [E_local, 2I, K]`` (gate rows, then up
    rows; ``swigluoai``: interleaved), ``w2_weight [E_local, K, I]``, and with ``has_bias``
    ``w13_bias [E_local, 2I]``, ``w2_bias [E_local, K]``. Buffers: ``expert_map`` (int32
    ``[global_num_experts]``, when ``ep_size > 1``), ``e_score_correction_bias`` (float32
    ``[E]``, when given).
    """

    expert_map: torch.Tensor | None
    e_score_correction_bias: torch.Tensor | None

    def __init__(self, *, router: Router, num_experts: int, top_k: int, hidden_size: int,
                 intermediate_size: int, params_dtype: torch.dtype, device: torch.device,
                 activation: MoEActivation, has_bias: bool, apply_router_weight_on_input: bool,
                 routed_scaling_factor: float, apply_routed_scale_to_output: bool,
                 ep_size: int, ep_rank: int, num_local_experts: int,
                 expert_map: torch.Tensor | None, local_expert_ids: torch.Tensor,
                 e_score_correction_bias: torch.Tensor | None,
                 shared_experts: nn.Module | None, eplb_state: EplbState | None,
                 checkpoint_names: tuple[str, str, str], backend: Backend,
                 check_ids: bool, prepare_finalize: FusedMoEPrepareAndFinalizeModular | None = None,
                 ) -> None:  # fmt: skip
        super().__init__()
        self.router = router
        self.num_experts = num_experts
        self.top_k = top_k
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.activation = activation
        self.has_bias = has_bias
        self.apply_router_weight_on_input = apply_router_weight_on_input
        self.routed_scaling_factor = routed_scaling_factor
        self.apply_routed_scale_to_output = apply_routed_scale_to_output
        self.ep_size, self.ep_rank = ep_size, ep_rank
        self.num_local_experts = num_local_experts
        self.global_num_experts = eplb_state.num_replicas if eplb_state is not None else num_experts
        self.local_expert_ids = local_expert_ids
        self.eplb_state = eplb_state
        self.checkpoint_names = checkpoint_names
        self.backend: Backend = backend
        self.check_ids = check_ids
        self.interleaved_gate_up = activation == MoEActivation.SWIGLUOAI
        rows = 2 * intermediate_size if activation.is_gated else intermediate_size
        options: dict[str, Any] = {"dtype": params_dtype, "device": device}
        nan = float("nan")
        self.w13_weight = nn.Parameter(
            torch.full((num_local_experts, rows, hidden_size), nan, **options), requires_grad=False
        )
        self.w2_weight = nn.Parameter(
            torch.full((num_local_experts, hidden_size, intermediate_size), nan, **options),
            requires_grad=False,
        )
        self.w13_bias: nn.Parameter | None = None
        self.w2_bias: nn.Parameter | None = None
        if has_bias:
            self.w13_bias = nn.Parameter(torch.full((num_local_experts, rows), nan, **options),
                                         requires_grad=False)  # fmt: skip
            self.w2_bias = nn.Parameter(
                torch.full((num_local_experts, hidden_size), nan, **options), requires_grad=False
            )
        self.register_buffer("expert_map", expert_map.to(device) if expert_map is not None
                             else None)  # fmt: skip
        self.register_buffer("e_score_correction_bias", e_score_correction_bias)
        self.shared_experts = shared_experts
        self.prepare_finalize = prepare_finalize
        self._kernels: dict[tuple[str, torch.dtype], FusedMoEKernel] = {}

    # --- the forward pass -------------------------------------------------------------------

    def forward(self, hidden_states: torch.Tensor, router_logits: torch.Tensor) -> torch.Tensor:
        """``[T, K]`` output for ``hidden_states [T, K]`` (``params_dtype``) and
        ``router_logits [T, num_experts]`` (any float dtype).

        Raises:
            TypeError: non-tensor inputs, or hidden states not in the parameters' dtype.
            ValueError: shapes that do not match the layer, or tensors on another device.
        """
        self._check_inputs(hidden_states, router_logits)
        topk_weights, topk_ids = self.router.select_experts(hidden_states, router_logits)
        if self.eplb_state is not None:
            self.eplb_state.to(hidden_states.device)
            topk_ids = self.eplb_state.record(0, topk_ids)
        if self.prepare_finalize is None:
            output = fused_experts(
                hidden_states, self.w13_weight, self.w2_weight, topk_weights, topk_ids,
                activation=self.activation, expert_map=self.expert_map,
                global_num_experts=self.global_num_experts,
                apply_router_weight_on_input=self.apply_router_weight_on_input,
                w1_bias=self.w13_bias, w2_bias=self.w2_bias, backend=self.backend,
                check_ids=self.check_ids,
            )  # fmt: skip
        else:
            output = self._dispatched_experts(hidden_states, topk_weights, topk_ids)
        if self.apply_routed_scale_to_output and self.routed_scaling_factor != 1.0:
            output = output * self.routed_scaling_factor
        # Partial sums (no process group) carry the shared experts on rank 0 only; dispatched
        # outputs are whole for this rank's own tokens, so every rank adds them.
        if self.shared_experts is not None and (
            self.ep_rank == 0 or self.prepare_finalize is not None
        ):
            output = output + self.shared_experts(hidden_states)
        return output

    def _dispatched_experts(self, hidden_states: torch.Tensor, topk_weights: torch.Tensor,
                            topk_ids: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """The modular kernel with this layer's prepare/finalize (tokens sent to the ranks that
        own their experts and combined back)."""
        assert self.prepare_finalize is not None
        chosen = resolve_backend(self.backend, hidden_states.device)
        key = (chosen, hidden_states.dtype)
        if key not in self._kernels:
            self._kernels[key] = self._build_kernel(chosen, hidden_states.dtype)
        return self._kernels[key](hidden_states, self.w13_weight, self.w2_weight, topk_weights,
                                  topk_ids, self.activation, self.global_num_experts,
                                  self.expert_map, self.apply_router_weight_on_input,
                                  check_ids=self.check_ids)  # fmt: skip

    def _build_kernel(self, chosen: str, dtype: torch.dtype) -> FusedMoEKernel:
        """The modular kernel for a backend and dtype (built once: its parts hold the parameter
        objects, which ``.to()`` updates in place)."""
        assert self.prepare_finalize is not None
        config = FusedMoEConfig(
            num_experts=self.global_num_experts, experts_per_token=self.top_k,
            hidden_dim=self.hidden_size, intermediate_size=self.intermediate_size,
            in_dtype=dtype, activation=self.activation,
            num_local_experts=self.num_local_experts, has_bias=self.has_bias,
        )  # fmt: skip
        quant = FusedMoEQuantConfig(w1_bias=self.w13_bias, w2_bias=self.w2_bias)
        experts: FusedMoEExpertsModular
        if self.prepare_finalize.activation_format == FusedMoEActivationFormat.BatchedExperts:
            batched = BatchedTritonExperts if chosen == "triton" else NaiveBatchedExperts
            experts = batched(config, quant,
                              max_num_tokens=self.prepare_finalize.max_num_tokens_per_rank(),
                              num_dispatchers=self.prepare_finalize.num_dispatchers())  # fmt: skip
        else:
            experts = (TritonExperts if chosen == "triton" else TorchExperts)(config, quant)
        return FusedMoEKernel(self.prepare_finalize, experts)

    def _check_inputs(self, hidden_states: object, router_logits: object) -> None:
        for name, value in (("hidden_states", hidden_states), ("router_logits", router_logits)):
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        assert isinstance(hidden_states, torch.Tensor) and isinstance(router_logits, torch.Tensor)
        if hidden_states.dim() != 2 or hidden_states.shape[1] != self.hidden_size:
            raise ValueError(f"hidden_states must be [T, hidden_size={self.hidden_size}], got "
                             f"{tuple(hidden_states.shape)}")  # fmt: skip
        if hidden_states.dtype != self.w13_weight.dtype:
            raise TypeError(f"hidden_states is {hidden_states.dtype} but the layer's parameters "
                            f"are {self.w13_weight.dtype}")  # fmt: skip
        expected = (hidden_states.shape[0], self.num_experts)
        if tuple(router_logits.shape) != expected:
            raise ValueError(f"router_logits must be [T, num_experts] = {list(expected)}, got "
                             f"{list(router_logits.shape)}")  # fmt: skip
        for name, tensor in (("hidden_states", hidden_states), ("router_logits", router_logits)):
            if tensor.device != self.w13_weight.device:
                raise ValueError(f"{name} is on {tensor.device} but the layer is on "
                                 f"{self.w13_weight.device}")  # fmt: skip

    def _apply(self, fn, recurse: bool = True):  # type: ignore[no-untyped-def]
        """Module.to() re-creates buffers; the router must read the moved bias."""
        super()._apply(fn, recurse)
        if self.e_score_correction_bias is not None and hasattr(self.router,
                                                                "e_score_correction_bias"):  # fmt: skip
            self.router.e_score_correction_bias = self.e_score_correction_bias
        wrapped: Any = getattr(self.router, "wrapped", None)
        if self.e_score_correction_bias is not None and hasattr(wrapped, "e_score_correction_bias"):
            wrapped.e_score_correction_bias = self.e_score_correction_bias
        return self

    # --- EPLB --------------------------------------------------------------------------------

    def local_logical_experts(self) -> torch.Tensor:
        """int64 ``[E_local]`` (CPU): the logical expert each local weight slot holds."""
        ids = self.local_expert_ids.long()
        if self.eplb_state is None:
            return ids
        return self.eplb_state.physical_to_logical_map[0].cpu()[ids]

    def eplb_step(self) -> Rearrangement | None:
        """End a forward pass for EPLB: move its load into the window and, every
        ``eplb_step_interval`` steps, rearrange (moving the weights). Returns the
        rearrangement, if one happened."""
        return self.rearrange() if self._require_eplb().end_pass() else None

    def rearrange(self) -> Rearrangement:
        """Rebalance now on the window's load: new maps, expert weights moved inside the layer.
        Outputs for the same input are the same before and after (every replica holds a copy of
        its expert)."""
        state = self._require_eplb()
        if self.prepare_finalize is not None:
            return self._rearrange_across_ranks()
        self._refuse_remote_moves()
        rearrangement = state.rearrange()
        self._move_weights(rearrangement, None)
        return rearrangement

    def _rearrange_across_ranks(self) -> Rearrangement:
        """Sum the ranks' load windows, plan on rank 0 and broadcast the map (so every rank
        commits the same one, whatever the policy's solver does), then move the weights: local
        moves by copy, the others with one all-to-all per parameter."""
        import torch.distributed as dist

        state = self._require_eplb()
        assert self.prepare_finalize is not None
        group = getattr(self.prepare_finalize, "group", None)
        device = self.w13_weight.device
        physical = state.expert_load_window.sum(dim=0).to(device)
        dist.all_reduce(physical, group=group)
        load = torch.zeros(state.num_layers, state.num_logical, dtype=torch.int64)
        load.scatter_add_(1, state.physical_to_logical_map.cpu(), physical.cpu())
        plan: list[Any] = [state.plan(load) if self.ep_rank == 0 else None]
        source = dist.get_global_rank(group, 0) if group is not None else 0
        dist.broadcast_object_list(plan, src=source, group=group)
        rearrangement = state.commit(plan[0], load)
        self._move_weights(rearrangement, group)
        return rearrangement

    def _move_weights(self, rearrangement: Rearrangement, group) -> None:  # type: ignore[no-untyped-def]
        """Copy each moved slot's weights from its source slot. Every source row is read before
        any slot is written. Rows that change rank (only with a process group) travel in move
        order, grouped by destination, so both ends agree without further messages."""
        import torch.distributed as dist

        per_rank, me = self.num_local_experts, self.ep_rank
        base = me * per_rank
        moves = [(m.source_slot // per_rank, m.source_slot - base, m.target_slot // per_rank,
                  m.target_slot - base) for m in rearrangement.moves]  # fmt: skip
        local = [(s, t) for src, s, dst, t in moves if src == dst == me]
        sends = [[s for src, s, dst, _ in moves if src == me and dst == d != me]
                 for d in range(self.ep_size)]  # fmt: skip
        receives = [[t for src, _, dst, t in moves if dst == me and src == r != me]
                    for r in range(self.ep_size)]  # fmt: skip
        device = self.w13_weight.device

        def index(slots: list[int]) -> torch.Tensor:
            return torch.tensor(slots, dtype=torch.long, device=device)

        send_index = index([s for rows in sends for s in rows])
        recv_index = index([t for rows in receives for t in rows])
        local_source, local_target = index([s for s, _ in local]), index([t for _, t in local])
        params = [p for p in (self.w13_weight, self.w2_weight, self.w13_bias, self.w2_bias)
                  if p is not None]  # fmt: skip
        with torch.no_grad():
            for param in params:
                outgoing = param[send_index]  # advanced indexing: copies, read before writes
                copied = param[local_source]
                incoming = torch.empty((len(recv_index), *param.shape[1:]), dtype=param.dtype,
                                       device=device)  # fmt: skip
                if self.ep_size > 1:
                    dist.all_to_all_single(incoming, outgoing, [len(r) for r in receives],
                                           [len(r) for r in sends], group=group)  # fmt: skip
                param[local_target] = copied
                param[recv_index] = incoming

    def _require_eplb(self) -> EplbState:
        if self.eplb_state is None:
            raise RuntimeError("this layer was built without enable_eplb=True")
        return self.eplb_state

    def _refuse_remote_moves(self) -> None:
        if self.ep_size > 1:
            raise NotImplementedError(
                "rearranging with ep_size > 1 moves weights between ranks; a single-process layer "
                "holds only its own rank's experts (use the distributed expert-parallel layer)"
            )

    # --- checkpoints -------------------------------------------------------------------------

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """See :func:`moekit.experts.layer.checkpoint.load_weights`."""
        return checkpoint.load_weights(self, weights)

    def load_checkpoint(self, paths: str | Path | list[str | Path], prefix: str = "") -> set[str]:
        """See :func:`moekit.experts.layer.checkpoint.load_checkpoint`."""
        return checkpoint.load_checkpoint(self, paths, prefix)

    def extra_repr(self) -> str:
        return (f"num_experts={self.num_experts}, top_k={self.top_k}, "
                f"hidden_size={self.hidden_size}, intermediate_size={self.intermediate_size}, "
                f"activation={self.activation.value}, local_experts={self.num_local_experts}, "
                f"ep={self.ep_rank}/{self.ep_size}, eplb={self.eplb_state is not None}")  # fmt: skip
