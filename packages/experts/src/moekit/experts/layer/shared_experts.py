"""The dense MLP that DeepSeek- and Qwen-style layers run on every token beside the routed ones."""

from __future__ import annotations

import torch
from torch import nn

from moekit.experts.activation import MoEActivation, apply_activation


class SharedExpertsMLP(nn.Module):
    """``down_proj(act(gate_proj(x), up_proj(x)))`` with the checkpoint's usual parameter names.

    Args:
        hidden_size: ``K``.
        intermediate_size: ``I`` of the shared experts together (DeepSeek-V3: one expert of 2048;
            ``n`` shared experts of ``I`` each are one MLP of ``n * I``).
        activation: a gated :class:`MoEActivation` other than ``swigluoai`` (default ``silu``).
        dtype: of the parameters.
        device: of the parameters.

    Parameters ``gate_proj.weight [I, K]``, ``up_proj.weight [I, K]``, ``down_proj.weight
    [K, I]`` (no gradient) start as NaN, so a forward before loading is loud, not quietly wrong.
    """

    def __init__(self, hidden_size: int, intermediate_size: int, activation: str = "silu", *,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 ) -> None:  # fmt: skip
        super().__init__()
        act = MoEActivation.parse(activation)
        if not act.is_gated or act == MoEActivation.SWIGLUOAI:
            raise ValueError(
                f"activation must be gated and not interleaved (silu, gelu, gelu_tanh), got "
                f"{act.value!r}"
            )
        self.activation = act
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, False, device, dtype)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, False, device, dtype)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, False, device, dtype)
        for linear in (self.gate_proj, self.up_proj, self.down_proj):
            nn.init.constant_(linear.weight, float("nan"))
        self.requires_grad_(False)  # inference weights, like the routed experts'

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``[T, K] -> [T, K]``."""
        gate_up = torch.cat([self.gate_proj(hidden_states), self.up_proj(hidden_states)], dim=-1)
        return self.down_proj(apply_activation(gate_up, self.activation))
