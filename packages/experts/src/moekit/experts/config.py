"""Configuration dataclasses of a fused-MoE call (passed explicitly, never read from a global)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from moekit.experts.activation import MoEActivation


@dataclass(frozen=True)
class FusedMoEParallelConfig:
    """How the experts are spread: ``ep_size`` ranks of expert parallelism, this one ``ep_rank``."""

    ep_size: int = 1
    ep_rank: int = 0

    def __post_init__(self) -> None:
        if self.ep_size < 1 or not 0 <= self.ep_rank < self.ep_size:
            raise ValueError(f"need ep_size >= 1 and 0 <= ep_rank < ep_size, got {self}")

    @property
    def use_ep(self) -> bool:
        return self.ep_size > 1


@dataclass(frozen=True, eq=False)
class FusedMoEQuantConfig:
    """Quantisation of the experts' inputs and weights (moekit runs unquantised for now) and
    the per-expert biases ``w1_bias [E_local, N]``, ``w2_bias [E_local, K]``, added after each
    GEMM, before the routed weight."""

    quant_dtype: torch.dtype | None = None
    w1_bias: torch.Tensor | None = None
    w2_bias: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.quant_dtype is not None:
            raise NotImplementedError("moekit runs unquantised experts only (quant_dtype=None)")

    @property
    def is_quantized(self) -> bool:
        return False


@dataclass(frozen=True)
class FusedMoEConfig:
    """The shape of one MoE layer."""

    num_experts: int  # global
    experts_per_token: int  # top_k
    hidden_dim: int  # K
    intermediate_size: int  # I (per expert, after any tensor-parallel split)
    in_dtype: torch.dtype = torch.bfloat16
    activation: MoEActivation = MoEActivation.SILU
    num_local_experts: int | None = None
    has_bias: bool = False
    parallel_config: FusedMoEParallelConfig = field(default_factory=FusedMoEParallelConfig)

    def __post_init__(self) -> None:
        for name in ("num_experts", "experts_per_token", "hidden_dim", "intermediate_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        object.__setattr__(self, "activation", MoEActivation.parse(self.activation))
        if self.num_local_experts is None:
            object.__setattr__(self, "num_local_experts", self.num_experts)
