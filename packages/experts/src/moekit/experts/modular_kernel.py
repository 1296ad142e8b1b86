"""The modular fused-MoE kernel: ``[prepare] -> [experts] -> [finalize]``, each replaceable.

A ``FusedMoEPrepareAndFinalize`` moves tokens to where the experts run (and back); a
``FusedMoEExperts`` computes ``sum_j w[t, j] * W2[e] @ act(W13[e] @ x[t])`` in its activation
format; ``FusedMoEKernel`` checks that the two fit, allocates the workspaces and runs the three
steps (in chunks of tokens when asked).
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from moekit.experts.activation import MoEActivation
from moekit.experts.config import FusedMoEConfig, FusedMoEParallelConfig, FusedMoEQuantConfig
from moekit.experts.topk_weight_and_reduce import TopKWeightAndReduce
from moekit.experts.weight_chunks import experts_and_rows


class FusedMoEActivationFormat(enum.Enum):
    """``Standard``: ``[M, K]`` token rows. ``BatchedExperts``: ``[E_local, max_tokens, K]``."""

    Standard = "standard"
    BatchedExperts = "batched_experts"


@dataclass
class ExpertTokensMetadata:
    """Tokens per local expert (batched format): a device tensor, optionally a CPU copy."""

    expert_num_tokens: torch.Tensor
    expert_num_tokens_cpu: torch.Tensor | None = None

    @staticmethod
    def make_from_list(counts: list[int], device: torch.device | str) -> ExpertTokensMetadata:
        cpu = torch.tensor(counts, dtype=torch.int32)
        return ExpertTokensMetadata(expert_num_tokens=cpu.to(device), expert_num_tokens_cpu=cpu)


PrepareResult = tuple[
    torch.Tensor,  # a1q: the experts' input
    torch.Tensor | None,  # a1q_scale
    ExpertTokensMetadata | None,
    torch.Tensor | None,  # dispatched topk_ids (None: unchanged)
    torch.Tensor | None,  # dispatched topk_weights
]


def _done(value: Any) -> Callable[[], Any]:
    return lambda: value


class FusedMoEPrepareAndFinalize(abc.ABC):
    """Moves tokens to the experts and their outputs back (dispatch / combine under EP)."""

    @property
    @abc.abstractmethod
    def activation_format(self) -> FusedMoEActivationFormat: ...

    #: Whether prepare/finalize run collectives across ranks: then every rank calls them once
    #: per forward, with or without tokens, and the kernel does not chunk.
    is_collective: bool = False

    #: Whether ``finalize`` leaves the rows where ``prepare`` found them and only applies the
    #: experts' weight-and-reduce to them. Then experts whose reduce is ``NoOP`` may write
    #: ``output`` itself, and ``NoOP`` has nothing to copy.
    finalizes_in_place: bool = False

    def topk_indices_dtype(self) -> torch.dtype | None:
        """The id dtype ``prepare`` needs, or None for any."""
        return None

    def max_num_tokens_per_rank(self) -> int | None:
        return None

    def num_dispatchers(self) -> int:
        return 1

    def output_is_reduced(self) -> bool:
        """Whether ``finalize`` leaves one fully reduced row per token."""
        return True


class FusedMoEPrepareAndFinalizeModular(FusedMoEPrepareAndFinalize):
    """Takes top-k ids and weights (the router already ran)."""

    @abc.abstractmethod
    def prepare(self, a1: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
                num_experts: int, expert_map: torch.Tensor | None,
                apply_router_weight_on_input: bool,
                quant_config: FusedMoEQuantConfig) -> PrepareResult:  # fmt: skip
        """``(a1q, a1q_scale, expert_tokens_meta, dispatched_ids, dispatched_weights)``."""

    @abc.abstractmethod
    def finalize(self, output: torch.Tensor, fused_expert_output: torch.Tensor,
                 topk_weights: torch.Tensor, topk_ids: torch.Tensor,
                 apply_router_weight_on_input: bool,
                 weight_and_reduce_impl: TopKWeightAndReduce) -> None:  # fmt: skip
        """Write the combined ``[M, K]`` result into ``output``."""

    def prepare_async(self, *args: Any, **kwargs: Any) -> Callable[[], PrepareResult]:
        """A receiver returning ``prepare``'s result (already done in this implementation)."""
        return _done(self.prepare(*args, **kwargs))

    def finalize_async(self, *args: Any, **kwargs: Any) -> Callable[[], None]:
        return _done(self.finalize(*args, **kwargs))


class FusedMoEPrepareAndFinalizeMonolithic(FusedMoEPrepareAndFinalize):
    """Takes router logits and routes inside (fused router + dispatch)."""

    @abc.abstractmethod
    def prepare(self, a1: torch.Tensor, router_logits: torch.Tensor,
                quant_config: FusedMoEQuantConfig) -> PrepareResult: ...  # fmt: skip

    @abc.abstractmethod
    def finalize(self, output: torch.Tensor, fused_expert_output: torch.Tensor) -> None: ...


class FusedMoEExperts(abc.ABC):
    """The expert computation in one activation format.

    Built with ``(moe_config, quant_config, max_num_tokens, num_dispatchers)``: both of the last
    two set for the batched format, both None for the standard one."""

    def __init__(self, moe_config: FusedMoEConfig, quant_config: FusedMoEQuantConfig | None = None,
                 max_num_tokens: int | None = None, num_dispatchers: int | None = None) -> None:  # fmt: skip
        batched = self.activation_format() == FusedMoEActivationFormat.BatchedExperts
        if batched != (max_num_tokens is not None) or batched != (num_dispatchers is not None):
            raise ValueError(
                f"{type(self).__name__}: max_num_tokens and num_dispatchers must both be set for "
                f"the batched format and both None for the standard one, got "
                f"{max_num_tokens} and {num_dispatchers}"
            )
        self.moe_config = moe_config
        self.quant_config = quant_config or FusedMoEQuantConfig()
        self.max_num_tokens = max_num_tokens
        self.num_dispatchers = num_dispatchers

    @classmethod
    @abc.abstractmethod
    def activation_format(cls) -> FusedMoEActivationFormat: ...

    # capability hooks -------------------------------------------------------------------------
    @classmethod
    def _supports_current_device(cls, device: torch.device) -> bool:
        return True

    @classmethod
    def _supports_activation(cls, activation: MoEActivation) -> bool:
        return True

    @classmethod
    def _supports_no_act_and_mul(cls) -> bool:
        return True

    @classmethod
    def _supports_parallel_config(cls, parallel_config: FusedMoEParallelConfig) -> bool:
        return True

    @classmethod
    def _supports_routing_method(cls, routing_method_type: Any) -> bool:
        return True

    @classmethod
    def _supports_shape(cls, num_tokens: int, n: int, k: int) -> bool:
        return True

    def supports_chunking(self) -> bool:
        return True

    def supports_expert_map(self) -> bool:
        return True

    def supports_chunked_weights(self) -> bool:
        """Whether ``apply`` takes ``w1`` and ``w2`` stored in K chunks (``chunk_weights``; not
        the token chunking of ``supports_chunking``)."""
        return False

    def expects_unquantized_inputs(self) -> bool:
        return True

    @classmethod
    def is_supported_config(cls, moe_config: FusedMoEConfig, quant_config: FusedMoEQuantConfig,
                            device: torch.device,
                            routing_method_type: Any = None) -> tuple[bool, str | None]:  # fmt: skip
        """Chain the hooks: ``(True, None)`` or ``(False, why)``."""
        activation = MoEActivation.parse(moe_config.activation)
        checks = [
            (cls._supports_current_device(device), f"device {device}"),
            (cls._supports_activation(activation), f"activation {activation.value}"),
            (activation.is_gated or cls._supports_no_act_and_mul(), "non-gated activations"),
            (cls._supports_parallel_config(moe_config.parallel_config), "the parallel config"),
            (cls._supports_routing_method(routing_method_type), "the routing method"),
        ]
        for ok, what in checks:
            if not ok:
                return False, f"{cls.__name__} does not support {what}"
        return True, None

    # the computation --------------------------------------------------------------------------
    def moe_problem_size(self, a1: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor,
                         topk_ids: torch.Tensor) -> tuple[int, int, int, int, int]:  # fmt: skip
        """``(E_local, M, N, K, top_k)``: ``N`` is GEMM1's output width (``2I`` when gated)."""
        num_local, n = experts_and_rows(w1)
        k = a1.shape[-1]
        num_tokens = a1.shape[0] if a1.dim() == 2 else a1.shape[1]
        return num_local, num_tokens, n, k, topk_ids.shape[1]

    @abc.abstractmethod
    def workspace_shapes(self, M: int, N: int, K: int, topk: int, global_num_experts: int,
                         local_num_experts: int, expert_tokens_meta: ExpertTokensMetadata | None,
                         activation: MoEActivation,
                         ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:  # fmt: skip
        """``(workspace13, workspace2, output)`` shapes for one ``apply`` call; the workspaces take
        whatever layout the experts' ``apply`` views them in."""

    @abc.abstractmethod
    def finalize_weight_and_reduce_impl(self) -> TopKWeightAndReduce: ...


class FusedMoEExpertsModular(FusedMoEExperts):
    @abc.abstractmethod
    def apply(self, output: torch.Tensor, hidden_states: torch.Tensor, w1: torch.Tensor,
              w2: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
              activation: MoEActivation, global_num_experts: int,
              expert_map: torch.Tensor | None, a1q_scale: torch.Tensor | None,
              a2_scale: torch.Tensor | None, workspace13: torch.Tensor,
              workspace2: torch.Tensor, expert_tokens_meta: ExpertTokensMetadata | None,
              apply_router_weight_on_input: bool) -> None:  # fmt: skip
        """Write the experts' output into ``output`` (shape from ``workspace_shapes``)."""


class FusedMoEExpertsMonolithic(FusedMoEExperts):
    @abc.abstractmethod
    def apply(self, hidden_states: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor,
              router_logits: torch.Tensor, activation: MoEActivation) -> torch.Tensor: ...  # fmt: skip
