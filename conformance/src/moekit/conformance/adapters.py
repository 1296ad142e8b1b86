"""Adapters: the NumPy-in / NumPy-out face an implementation shows to the conformance suite.

An adapter is any object with the methods of :class:`AlignAdapter` (named after the spec) and a
``capabilities`` set. Choose one with ``--moekit-impl NAME`` or ``MOEKIT_IMPL``:

- ``reference``: :mod:`moekit.reference` (NumPy);
- ``moekit`` / ``moekit[BACKEND]`` / ``moekit[BACKEND,DEVICE]``: the moekit packages, e.g.
  ``moekit[triton,cuda]`` (default backend ``auto``, device ``cuda`` when available else ``cpu``);
- ``package.module:object``: any importable adapter (an instance, or a class built without
  arguments), so a third party can certify its own kernels.
"""

from __future__ import annotations

import importlib
import re
from typing import Any, Protocol, runtime_checkable

import numpy as np

from moekit.conformance.checks import round_to_dtype
from moekit.conformance.eplb_adapters import (
    EPLB_CAPABILITIES,
    EPLB_ILP,
    MoekitEplbMixin,
    ReferenceEplbMixin,
    moekit_eplb_available,
)
from moekit.conformance.experts_adapters import (
    EXPERTS_CAPABILITIES,
    MODEL_SHAPES,
    MoekitExpertsMixin,
    ReferenceExpertsMixin,
    moekit_experts_available,
)
from moekit.conformance.routing_adapters import (
    ROUTING_CAPABILITIES,
    MoekitRoutingMixin,
    ReferenceRoutingMixin,
    moekit_routing_available,
)

# Capabilities a test may require; a missing one skips the test with its reason.
DETERMINISTIC_ORDER = "deterministic_order"  # ascending slot order inside segments
INT64_IDS = "int64_ids"
EXPERT_MAP = "expert_map"
SCATTER_IDX = "scatter_idx"
BATCHED_ALIGN = "batched_align"
MOE_SUM = "moe_sum"
COUNT_TOKENS = "count_expert_num_tokens"
PERMUTE = "permute"
VALIDATES_INPUT = "validates_input"  # raises ValueError/TypeError on bad input
VALIDATES_MAP_VALUES = "validates_map_values"  # reads expert_map values to refuse bad maps
FLOAT16 = "float16"
BFLOAT16 = "bfloat16"

ALL_CAPABILITIES = (
    frozenset(
        {
            DETERMINISTIC_ORDER,
            INT64_IDS,
            EXPERT_MAP,
            SCATTER_IDX,
            BATCHED_ALIGN,
            MOE_SUM,
            COUNT_TOKENS,
            PERMUTE,
            VALIDATES_INPUT,
            VALIDATES_MAP_VALUES,
            FLOAT16,
            BFLOAT16,
        }
    )
    | ROUTING_CAPABILITIES
    | EXPERTS_CAPABILITIES
    | EPLB_CAPABILITIES
)


@runtime_checkable
class AlignAdapter(Protocol):
    name: str
    capabilities: frozenset[str]

    def moe_align_block_size(
        self,
        topk_ids: np.ndarray,
        block_size: int,
        num_experts: int,
        expert_map: np.ndarray | None = None,
        pad_sorted_ids: bool = False,
        ignore_invalid_experts: bool = False,
        return_scatter_idx: bool = False,
    ) -> tuple[np.ndarray, ...]: ...

    def batched_moe_align_block_size(
        self, max_tokens_per_batch: int, block_size: int, expert_num_tokens: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def moe_sum(
        self,
        input: np.ndarray,
        topk_ids: np.ndarray | None = None,
        expert_map: np.ndarray | None = None,
        dtype: str = "float32",
    ) -> np.ndarray: ...

    def count_expert_num_tokens(
        self, topk_ids: np.ndarray, num_local_experts: int, expert_map: np.ndarray | None = None
    ) -> np.ndarray: ...

    def moe_permute(
        self,
        hidden_states: np.ndarray,
        topk_ids: np.ndarray,
        num_experts: int,
        expert_map: np.ndarray | None = None,
        num_local_experts: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]: ...

    def moe_unpermute(
        self,
        permuted: np.ndarray,
        topk_weights: np.ndarray,
        inv_permuted_idx: np.ndarray,
        expert_first_token_offset: np.ndarray,
        dtype: str = "float32",
    ) -> np.ndarray: ...


class ReferenceAdapter(ReferenceRoutingMixin, ReferenceExpertsMixin, ReferenceEplbMixin):
    """The NumPy oracle itself (checks the suite's own cases and checkers)."""

    name = "reference"
    # The reference has no optimising EPLB policy: the ILP cases compare with it.
    capabilities = ALL_CAPABILITIES - {VALIDATES_INPUT, VALIDATES_MAP_VALUES, MODEL_SHAPES,
                                       EPLB_ILP}  # fmt: skip

    def __init__(self) -> None:
        import moekit.reference as ref

        self._ref = ref

    def moe_align_block_size(self, topk_ids, block_size, num_experts, expert_map=None,
                             pad_sorted_ids=False, ignore_invalid_experts=False,
                             return_scatter_idx=False):  # fmt: skip
        return self._ref.moe_align_block_size(
            topk_ids, block_size, num_experts, expert_map, pad_sorted_ids,
            ignore_invalid_experts, return_scatter_idx,
        )  # fmt: skip

    def batched_moe_align_block_size(self, max_tokens_per_batch, block_size, expert_num_tokens):
        return self._ref.batched_moe_align_block_size(
            max_tokens_per_batch, block_size, expert_num_tokens
        )

    def moe_sum(self, input, topk_ids=None, expert_map=None, dtype="float32"):
        return self._ref.moe_sum(round_to_dtype(input, dtype), topk_ids, expert_map)

    def count_expert_num_tokens(self, topk_ids, num_local_experts, expert_map=None):
        return self._ref.count_expert_num_tokens(topk_ids, num_local_experts, expert_map)

    def moe_permute(self, hidden_states, topk_ids, num_experts, expert_map=None,
                    num_local_experts=None):  # fmt: skip
        return self._ref.moe_permute(
            hidden_states, topk_ids, num_experts, expert_map, num_local_experts
        )

    def moe_unpermute(self, permuted, topk_weights, inv_permuted_idx, expert_first_token_offset,
                      dtype="float32"):  # fmt: skip
        return self._ref.moe_unpermute(
            round_to_dtype(permuted, dtype),
            topk_weights,
            inv_permuted_idx,
            expert_first_token_offset,
        )


class MoekitAdapter(MoekitRoutingMixin, MoekitExpertsMixin, MoekitEplbMixin):
    """The ``moekit.align`` and ``moekit.routing`` ops on a chosen backend and device."""

    def __init__(self, backend: str = "auto", device: str | None = None) -> None:
        import torch

        import moekit.align as align

        self._torch = torch
        self._align = align
        self.backend = backend
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.name = f"moekit[{backend},{self.device}]"
        capabilities = set(ALL_CAPABILITIES)
        if not moekit_routing_available():
            capabilities -= ROUTING_CAPABILITIES
        if not moekit_experts_available():
            capabilities -= EXPERTS_CAPABILITIES
        if not moekit_eplb_available():
            capabilities -= EPLB_CAPABILITIES
        if not self.device.startswith("cuda"):
            # The Triton 3.x interpreter computes bf16 dots wrongly; bf16 is for GPUs only.
            capabilities.discard(BFLOAT16)
            capabilities.discard(MODEL_SHAPES)
        if self.device != "cpu":
            # Reading a device map's values would stall the stream on every call; moekit leaves
            # that to validate_expert_map, called once at setup.
            capabilities.discard(VALIDATES_MAP_VALUES)
        self.capabilities = frozenset(capabilities)

    # conversions -----------------------------------------------------------------------------
    def _tensor(self, array: np.ndarray | None, dtype: Any = None):
        if array is None:
            return None
        tensor = self._torch.from_numpy(np.ascontiguousarray(array))
        if dtype is not None:
            tensor = tensor.to(getattr(self._torch, dtype))
        return tensor.to(self.device)

    def _numpy(self, tensor) -> np.ndarray:
        if tensor.dtype == self._torch.bfloat16:
            tensor = tensor.float()
        return tensor.cpu().numpy()

    # ops -------------------------------------------------------------------------------------
    def moe_align_block_size(self, topk_ids, block_size, num_experts, expert_map=None,
                             pad_sorted_ids=False, ignore_invalid_experts=False,
                             return_scatter_idx=False):  # fmt: skip
        outputs = self._align.moe_align_block_size(
            self._tensor(topk_ids), block_size, num_experts, self._tensor(expert_map),
            pad_sorted_ids, ignore_invalid_experts, return_scatter_idx, backend=self.backend,
        )  # fmt: skip
        return tuple(self._numpy(t) for t in outputs)

    def batched_moe_align_block_size(self, max_tokens_per_batch, block_size, expert_num_tokens):
        outputs = self._align.batched_moe_align_block_size(
            max_tokens_per_batch, block_size, self._tensor(expert_num_tokens),
            backend=self.backend,
        )  # fmt: skip
        return tuple(self._numpy(t) for t in outputs)

    def moe_sum(self, input, topk_ids=None, expert_map=None, dtype="float32"):
        x = self._tensor(input, dtype)
        out = self._torch.full(x.shape[::2], float("nan"), dtype=x.dtype, device=self.device)
        self._align.moe_sum(
            x, out, self._tensor(topk_ids), self._tensor(expert_map), backend=self.backend
        )
        return self._numpy(out)

    def count_expert_num_tokens(self, topk_ids, num_local_experts, expert_map=None):
        return self._numpy(
            self._align.count_expert_num_tokens(
                self._tensor(topk_ids),
                num_local_experts,
                self._tensor(expert_map),
                backend=self.backend,
            )  # fmt: skip
        )

    def moe_permute(self, hidden_states, topk_ids, num_experts, expert_map=None,
                    num_local_experts=None):  # fmt: skip
        outputs = self._align.moe_permute(
            self._tensor(hidden_states), self._tensor(topk_ids), num_experts,
            self._tensor(expert_map), num_local_experts, backend=self.backend,
        )  # fmt: skip
        return tuple(self._numpy(t) for t in outputs)

    def moe_unpermute(self, permuted, topk_weights, inv_permuted_idx, expert_first_token_offset,
                      dtype="float32"):  # fmt: skip
        out = self._align.moe_unpermute(
            self._tensor(permuted, dtype), self._tensor(topk_weights, "float32"),
            self._tensor(inv_permuted_idx), self._tensor(expert_first_token_offset),
            backend=self.backend,
        )  # fmt: skip
        return self._numpy(out)


_MOEKIT_SPEC = re.compile(r"^moekit(?:\[(?P<backend>\w+)(?:,(?P<device>[\w:]+))?\])?$")


def load_adapter(spec: str) -> AlignAdapter:
    """Build the adapter named by ``spec`` (see the module docstring)."""
    spec = spec.strip()
    if spec == "reference":
        return ReferenceAdapter()
    match = _MOEKIT_SPEC.match(spec)
    if match:
        return MoekitAdapter(match["backend"] or "auto", match["device"])
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        target = getattr(importlib.import_module(module_name), attr)
        adapter = target() if isinstance(target, type) else target
        missing = [m for m in ("capabilities", "name") if not hasattr(adapter, m)]
        if missing:
            raise ValueError(f"adapter {spec!r} lacks {missing}")
        return adapter
    raise ValueError(
        f"unknown implementation {spec!r}: use 'reference', 'moekit[BACKEND,DEVICE]' "
        "or 'package.module:object'"
    )
