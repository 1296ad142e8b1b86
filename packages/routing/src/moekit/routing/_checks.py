"""Input validation of the routing functions: every check runs before any kernel launch."""

from __future__ import annotations

from dataclasses import dataclass

import torch

SCORING_FUNCS = ("softmax", "sigmoid")
_LOGIT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_INDEX_DTYPES = (torch.int32, torch.int64)


@dataclass(frozen=True)
class RoutingProblem:
    """The validated arguments of one routing call."""

    logits: torch.Tensor  # [num_tokens, num_experts], contiguous
    top_k: int
    renormalize: bool
    scoring_func: str
    indices_type: torch.dtype
    bias: torch.Tensor | None  # float32 [num_experts], contiguous, on the logits' device
    routed_scaling_factor: float
    num_expert_group: int  # 1 when not grouped
    topk_group: int  # 1 when not grouped
    grouped: bool  # grouped_topk semantics: non-finite scores rank last, renormalise with +1e-20

    @property
    def num_tokens(self) -> int:
        return self.logits.shape[0]

    @property
    def num_experts(self) -> int:
        return self.logits.shape[1]


def check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_logits(gating_output: object, name: str = "gating_output") -> torch.Tensor:
    """``gating_output`` must be a 2-D float16/bfloat16/float32 tensor ``[num_tokens, E]``."""
    if not isinstance(gating_output, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(gating_output).__name__}")
    if gating_output.dtype not in _LOGIT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16 or float32, got {gating_output.dtype}")
    if gating_output.dim() != 2:
        raise ValueError(
            f"{name} must be 2-D [num_tokens, num_experts], got "
            f"{gating_output.dim()}-D {tuple(gating_output.shape)}"
        )
    if gating_output.shape[1] < 1:
        raise ValueError(f"{name} must have at least one expert column, got shape "
                         f"{tuple(gating_output.shape)}")  # fmt: skip
    return gating_output


def check_hidden_states(hidden_states: object, num_tokens: int) -> None:
    if hidden_states is None:
        return
    if not isinstance(hidden_states, torch.Tensor):
        raise TypeError(
            f"hidden_states must be a torch.Tensor or None, got {type(hidden_states).__name__}"
        )
    if hidden_states.dim() < 1 or hidden_states.shape[0] != num_tokens:
        raise ValueError(
            f"hidden_states must have num_tokens={num_tokens} rows like gating_output, "
            f"got shape {tuple(hidden_states.shape)}"
        )


def check_scoring_func(scoring_func: object) -> str:
    if scoring_func not in SCORING_FUNCS:
        raise ValueError(f"scoring_func must be one of {SCORING_FUNCS}, got {scoring_func!r}")
    return scoring_func  # type: ignore[return-value]


def check_indices_type(indices_type: object) -> torch.dtype:
    if indices_type is None:
        return torch.int32
    if indices_type not in _INDEX_DTYPES:
        raise TypeError(f"indices_type must be torch.int32 or torch.int64, got {indices_type!r}")
    return indices_type  # type: ignore[return-value]


def check_bias(bias: object, num_experts: int, device: torch.device) -> torch.Tensor:
    name = "e_score_correction_bias"
    if not isinstance(bias, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(bias).__name__}")
    if not bias.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {bias.dtype}")
    if bias.dim() != 1 or bias.shape[0] != num_experts:
        raise ValueError(
            f"{name} must have shape [num_experts={num_experts}], got {tuple(bias.shape)}"
        )
    if bias.device != device:
        raise ValueError(f"{name} is on {bias.device} but gating_output is on {device}")
    return bias.to(torch.float32).contiguous()


def check_scale(routed_scaling_factor: object) -> float:
    if isinstance(routed_scaling_factor, bool) or not isinstance(
        routed_scaling_factor, int | float
    ):
        raise TypeError(
            f"routed_scaling_factor must be a float, got {type(routed_scaling_factor).__name__}"
        )
    value = float(routed_scaling_factor)
    if not value == value or value in (float("inf"), float("-inf")):
        raise ValueError(f"routed_scaling_factor must be finite, got {routed_scaling_factor}")
    return value


def check_groups(num_experts: int, top_k: int, num_expert_group: object, topk_group: object,
                 has_bias: bool) -> tuple[int, int]:  # fmt: skip
    groups = check_int(num_expert_group, "num_expert_group", 1)
    kept = check_int(topk_group, "topk_group", 1)
    if num_experts % groups != 0:
        raise ValueError(
            f"num_experts={num_experts} must be divisible by num_expert_group={groups}"
        )
    if kept > groups:
        raise ValueError(f"topk_group={kept} must be <= num_expert_group={groups}")
    per_group = num_experts // groups
    if has_bias and per_group < 2:
        raise ValueError(
            f"with e_score_correction_bias a group is scored by its top-2 experts, so it needs "
            f">= 2 experts; num_experts={num_experts} / num_expert_group={groups} gives {per_group}"
        )
    if top_k > kept * per_group:
        raise ValueError(
            f"topk={top_k} is more than the {kept * per_group} experts of the topk_group={kept} "
            f"kept groups ({per_group} experts each)"
        )
    return groups, kept


def routing_problem(
    hidden_states: object,
    gating_output: object,
    topk: object,
    renormalize: object,
    scoring_func: object,
    indices_type: object,
    *,
    bias: object = None,
    routed_scaling_factor: object = 1.0,
    grouped: bool = False,
    num_expert_group: object = None,
    topk_group: object = None,
) -> RoutingProblem:
    """Validate the arguments shared by the routing functions."""
    logits = check_logits(gating_output)
    num_tokens, num_experts = logits.shape
    check_hidden_states(hidden_states, num_tokens)
    top_k = check_int(topk, "topk", 1)
    if top_k > num_experts:
        raise ValueError(f"topk={top_k} must be <= num_experts={num_experts}")
    if not isinstance(renormalize, bool):
        raise TypeError(f"renormalize must be a bool, got {type(renormalize).__name__}")
    scoring = check_scoring_func(scoring_func)
    index_dtype = check_indices_type(indices_type)
    bias_tensor = None if bias is None else check_bias(bias, num_experts, logits.device)
    scale = check_scale(routed_scaling_factor)
    groups, kept = 1, 1
    if grouped:
        groups, kept = check_groups(
            num_experts, top_k, num_expert_group, topk_group, bias_tensor is not None
        )
    return RoutingProblem(
        logits=logits.contiguous(),
        top_k=top_k,
        renormalize=renormalize,
        scoring_func=scoring,
        indices_type=index_dtype,
        bias=bias_tensor,
        routed_scaling_factor=scale,
        num_expert_group=groups,
        topk_group=kept,
        grouped=grouped,
    )
