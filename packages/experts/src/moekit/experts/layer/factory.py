"""``FusedMoE(...)``: build a :class:`MoERunner` from a model's MoE configuration."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from moekit.align import Backend
from moekit.experts._checks import check_int
from moekit.experts.activation import MoEActivation
from moekit.experts.layer.expert_map import PLACEMENTS, ExpertPlacement, determine_expert_map
from moekit.experts.layer.runner import MoERunner
from moekit.routing import Router, create_router


def _eplb_state(num_experts: int, num_physical: int, num_groups: int, ep_size: int,
                eplb_num_ranks: int | None, eplb_num_nodes: int, eplb_policy: Any,
                eplb_window_size: int, eplb_step_interval: int, device: torch.device):  # type: ignore[no-untyped-def]  # fmt: skip
    try:
        from moekit.eplb import DefaultEplbPolicy, EplbState, IlpEplbPolicy
    except ImportError as error:
        raise ImportError("enable_eplb needs moekit-eplb: pip install 'moekit-experts[eplb]'"
                          ) from error  # fmt: skip
    ranks = ep_size if eplb_num_ranks is None else check_int(eplb_num_ranks, "eplb_num_ranks", 1)
    if num_physical % ranks:
        raise ValueError(
            f"EPLB needs the ranks to divide the replicas: num_experts + num_redundant_experts = "
            f"{num_physical} is not a multiple of {'eplb_num_ranks' if eplb_num_ranks else 'ep_size'}"
            f" = {ranks}"
        )
    policies: dict[str, Any] = {"default": DefaultEplbPolicy, "ilp": IlpEplbPolicy}
    if isinstance(eplb_policy, str) and eplb_policy not in policies:
        raise ValueError(f"eplb_policy must be 'default', 'ilp' or a policy class, got "
                         f"{eplb_policy!r}")  # fmt: skip
    policy: Any = policies[eplb_policy] if isinstance(eplb_policy, str) else eplb_policy
    groups = num_groups if num_experts % num_groups == 0 else 1
    return EplbState(1, num_experts, num_physical, num_groups=groups, num_nodes=eplb_num_nodes,
                     num_ranks=ranks, policy=policy, window_size=eplb_window_size,
                     step_interval=eplb_step_interval, device=device)  # fmt: skip


def _group_rank(process_group: Any, ep_size: int, ep_rank: int, num_physical: int,
                enable_eplb: bool) -> tuple[int, int]:  # fmt: skip
    """``(ep_size, ep_rank)`` from the group; explicit values must agree with it."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise ValueError("process_group needs torch.distributed initialised (init_process_group)")
    group = None if process_group is dist.group.WORLD else process_group
    size, rank = dist.get_world_size(group), dist.get_rank(group)
    if ep_size not in (1, size) or ep_rank not in (0, rank):
        raise ValueError(f"ep_size={ep_size}, ep_rank={ep_rank} disagree with the process group "
                         f"(size {size}, this rank {rank}); leave them out")  # fmt: skip
    what = "the replicas (num_experts + num_redundant_experts)" if enable_eplb else "num_experts"
    if num_physical % size:
        raise ValueError(f"the process group's size {size} does not divide {what} = "
                         f"{num_physical}")  # fmt: skip
    return size, rank


def FusedMoE(  # noqa: N802 (vLLM's public name: engines switch by renaming the import)
    num_experts: int,
    top_k: int,
    hidden_size: int,
    intermediate_size: int,
    params_dtype: torch.dtype | None = None,
    renormalize: bool = True,
    use_grouped_topk: bool = False,
    num_expert_group: int | None = None,
    topk_group: int | None = None,
    custom_routing_function: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None,
    scoring_func: str = "softmax",
    routed_scaling_factor: float = 1.0,
    e_score_correction_bias: torch.Tensor | None = None,
    apply_router_weight_on_input: bool = False,
    activation: str | MoEActivation = "silu",
    has_bias: bool = False,
    ep_size: int = 1,
    ep_rank: int = 0,
    expert_placement: ExpertPlacement = "linear",
    enable_eplb: bool = False,
    num_redundant_experts: int = 0,
    shared_experts: nn.Module | None = None,
    apply_routed_scale_to_output: bool = False,
    *,
    router: Router | None = None,
    eplb_policy: str | type = "default",
    eplb_num_ranks: int | None = None,
    eplb_num_nodes: int = 1,
    eplb_window_size: int = 1000,
    eplb_step_interval: int = 3000,
    checkpoint_names: tuple[str, str, str] = ("gate_proj", "up_proj", "down_proj"),
    device: torch.device | str | None = None,
    backend: Backend = "auto",
    process_group: Any = None,
    all2all_format: str = "standard",
    max_num_tokens_per_rank: int | None = None,
) -> MoERunner:
    """A fused-MoE layer: router, expert weights and the modular kernel in one module.

    Args:
        num_experts: logical experts ``E`` of the model.
        top_k: experts per token.
        hidden_size: ``K``.
        intermediate_size: ``I`` per expert (after any TP split).
        params_dtype: dtype of the expert weights and of the hidden states (default: torch's
            default dtype).
        renormalize: renormalise the top-k weights (see :func:`moekit.routing.create_router`).
        use_grouped_topk: DeepSeek's grouped top-k.
        num_expert_group: expert groups of the grouped top-k.
        topk_group: groups kept by the grouped top-k.
        custom_routing_function: ``fn(hidden_states=, gating_output=, topk=, renormalize=)``.
        scoring_func: ``"softmax"`` or ``"sigmoid"``.
        routed_scaling_factor: multiplies the routed weights, or the routed output when
            ``apply_routed_scale_to_output`` (then the router does not scale).
        e_score_correction_bias: ``[E]`` selection bias; it becomes the float32 buffer
            ``e_score_correction_bias``, loaded from ``gate.e_score_correction_bias``.
        apply_router_weight_on_input: scale the input by the weight (``top_k == 1`` only).
        activation: a :class:`MoEActivation` or its name.
        has_bias: per-expert biases ``w13_bias``, ``w2_bias``.
        ep_size: ranks of the expert-parallel group.
        ep_rank: this rank.
        expert_placement: ``"linear"`` or ``"round_robin"`` (:func:`determine_expert_map`).
        enable_eplb: EPLB: the router's logical ids go through
            :func:`moekit.eplb.map_to_physical_and_record`, which records the load (needs
            ``moekit-experts[eplb]``).
        num_redundant_experts: extra physical slots with EPLB (``E + R`` in all).
        shared_experts: a module ``[T, K] -> [T, K]`` added to the output
            (:class:`SharedExpertsMLP` has the checkpoint's naming).
        apply_routed_scale_to_output: scale the routed output instead of the weights.
        router: a ready :class:`moekit.routing.Router` instead of building one (for example a
            :class:`moekit.routing.RoutingSimulatorRouter`).
        eplb_policy: ``"default"``, ``"ilp"`` or an ``AbstractEplbPolicy`` subclass.
        eplb_num_ranks: ranks the policy balances for (default ``ep_size``); a single process
            can plan for simulated ranks.
        eplb_num_nodes: nodes the policy balances for.
        eplb_window_size: passes in the load window.
        eplb_step_interval: ``eplb_step()`` calls between rearrangements.
        checkpoint_names: the gate, up and down projection names in checkpoints.
        device: where the parameters live (default CPU).
        backend: ``"auto"``, ``"triton"`` or ``"torch"`` for the fused experts and the router.
        process_group: a ``torch.distributed`` group of the expert-parallel ranks (or
            ``torch.distributed.group.WORLD``). ``ep_size`` and ``ep_rank`` then come from it,
            each rank passes its own tokens, and tokens travel to the ranks owning their experts
            (:class:`~moekit.experts.distributed.AllToAllPrepareAndFinalize`). The ranks check
            at construction that they were built with the same configuration.
        all2all_format: with a process group, ``"standard"`` (token rows, the experts sort them)
            or ``"batched"`` (each rank's received tokens in ``[E_local, max, K]``, batched
            experts).
        max_num_tokens_per_rank: the most tokens a rank passes per forward; needed by the
            batched format, whose buffer it bounds.

    Returns:
        A :class:`MoERunner`; its weights are NaN until loaded (``load_checkpoint``,
        ``load_weights``) or set.

    Raises:
        TypeError: counts that are not ints, a bias that is not a float tensor.
        ValueError: incompatible options, named: grouped top-k with ``num_experts`` not a
            multiple of ``num_expert_group``; EPLB with ranks not dividing the replicas, or with
            ``round_robin`` placement; ``apply_router_weight_on_input`` with ``top_k > 1``;
            ``top_k > num_experts``; ``num_redundant_experts`` without EPLB; an unknown placement,
            activation or scoring function; a process group whose size does not divide the
            experts (or the replicas, with EPLB), or ranks that disagree on the configuration.
    """
    num_experts = check_int(num_experts, "num_experts", 1)
    top_k = check_int(top_k, "top_k", 1)
    hidden_size = check_int(hidden_size, "hidden_size", 1)
    intermediate_size = check_int(intermediate_size, "intermediate_size", 1)
    num_redundant_experts = check_int(num_redundant_experts, "num_redundant_experts", 0)
    act = MoEActivation.parse(activation)
    if top_k > num_experts:
        raise ValueError(f"top_k={top_k} exceeds num_experts={num_experts}")
    if apply_router_weight_on_input and top_k != 1:
        raise ValueError(f"apply_router_weight_on_input needs top_k == 1, got top_k={top_k}")
    if (use_grouped_topk and num_expert_group
            and num_experts % check_int(num_expert_group, "num_expert_group", 1)):  # fmt: skip
        raise ValueError(f"grouped top-k needs num_experts={num_experts} to be a multiple of "
                         f"num_expert_group={num_expert_group}")  # fmt: skip
    if expert_placement not in PLACEMENTS:
        raise ValueError(f"expert_placement must be one of {PLACEMENTS}, got {expert_placement!r}")
    if num_redundant_experts and not enable_eplb:
        raise ValueError("num_redundant_experts needs enable_eplb=True")
    if enable_eplb and expert_placement != "linear":
        raise ValueError("enable_eplb needs expert_placement='linear' (EPLB places replicas in "
                         "contiguous per-rank slots)")  # fmt: skip
    dtype = params_dtype or torch.get_default_dtype()
    target = torch.device(device) if device is not None else torch.device("cpu")
    bias = None
    if e_score_correction_bias is not None:
        if not isinstance(e_score_correction_bias, torch.Tensor):
            raise TypeError("e_score_correction_bias must be a torch.Tensor")
        bias = e_score_correction_bias.detach().to(device=target, dtype=torch.float32).clone()
    if router is None:
        router = create_router(
            top_k, num_experts, renormalize=renormalize, scoring_func=scoring_func,
            use_grouped_topk=use_grouped_topk, num_expert_group=num_expert_group,
            topk_group=topk_group, e_score_correction_bias=bias,
            routed_scaling_factor=1.0 if apply_routed_scale_to_output else routed_scaling_factor,
            custom_routing_function=custom_routing_function, backend=backend,
        )  # fmt: skip
    elif not isinstance(router, Router):
        raise TypeError(f"router must be a moekit.routing.Router, got {type(router).__name__}")
    num_physical = num_experts + num_redundant_experts
    if all2all_format not in ("standard", "batched"):
        raise ValueError(f"all2all_format must be 'standard' or 'batched', got {all2all_format!r}")
    if process_group is not None:
        ep_size, ep_rank = _group_rank(process_group, ep_size, ep_rank, num_physical, enable_eplb)
    eplb_state = None
    if enable_eplb:
        eplb_state = _eplb_state(num_experts, num_physical, num_expert_group or 1, ep_size,
                                 eplb_num_ranks, eplb_num_nodes, eplb_policy, eplb_window_size,
                                 eplb_step_interval, target)  # fmt: skip
    mapping = determine_expert_map(ep_size, ep_rank, num_physical, expert_placement)
    if len(checkpoint_names) != 3 or not all(isinstance(n, str) and n for n in checkpoint_names):
        raise ValueError(f"checkpoint_names must be 3 names (gate, up, down), got "
                         f"{checkpoint_names!r}")  # fmt: skip
    prepare_finalize: Any = None
    if process_group is not None:
        from moekit.experts.distributed import (
            AllToAllPrepareAndFinalize,
            check_same_config,
            expert_owners,
        )

        group = None if process_group is torch.distributed.group.WORLD else process_group
        check_same_config(
            dict(num_experts=num_experts, top_k=top_k, hidden_size=hidden_size,
                 intermediate_size=intermediate_size, params_dtype=str(dtype),
                 activation=act.value, has_bias=bool(has_bias), placement=expert_placement,
                 enable_eplb=enable_eplb, num_redundant_experts=num_redundant_experts,
                 scoring_func=scoring_func, use_grouped_topk=use_grouped_topk,
                 num_expert_group=num_expert_group, topk_group=topk_group,
                 routed_scaling_factor=float(routed_scaling_factor),
                 apply_routed_scale_to_output=apply_routed_scale_to_output,
                 shared_experts=shared_experts is not None, ep_size=ep_size),
            group,
        )  # fmt: skip
        owners = expert_owners(num_physical, ep_size, expert_placement)
        if all2all_format == "batched":
            from moekit.experts.distributed import AllToAllBatchedPrepareAndFinalize

            if max_num_tokens_per_rank is None:
                raise ValueError("all2all_format='batched' needs max_num_tokens_per_rank")
            local = determine_expert_map(ep_size, ep_rank, num_physical, expert_placement)
            prepare_finalize = AllToAllBatchedPrepareAndFinalize(
                group, owners, max_num_tokens_per_rank, local.num_local_experts
            )
        else:
            prepare_finalize = AllToAllPrepareAndFinalize(group, owners)
    return MoERunner(
        router=router, num_experts=num_experts, top_k=top_k, hidden_size=hidden_size,
        intermediate_size=intermediate_size, params_dtype=dtype, device=target, activation=act,
        has_bias=bool(has_bias), apply_router_weight_on_input=apply_router_weight_on_input,
        routed_scaling_factor=float(routed_scaling_factor),
        apply_routed_scale_to_output=apply_routed_scale_to_output, ep_size=ep_size,
        ep_rank=ep_rank, num_local_experts=mapping.num_local_experts,
        expert_map=mapping.expert_map, local_expert_ids=mapping.local_expert_ids,
        e_score_correction_bias=bias, shared_experts=shared_experts, eplb_state=eplb_state,
        checkpoint_names=(checkpoint_names[0], checkpoint_names[1], checkpoint_names[2]),
        backend=backend,
        check_ids=custom_routing_function is not None, prepare_finalize=prepare_finalize,
    )  # fmt: skip
