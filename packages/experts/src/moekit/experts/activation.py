"""The activations between the two GEMMs of an expert.

Gated activations read a GEMM1 output ``[..., 2I]``: the gate ``g`` is columns ``[0, I)`` and
up ``u`` columns ``[I, 2I)``; ``swigluoai`` (gpt-oss) reads them interleaved, ``[g0, u0, g1, u1,
...]``. Non-gated ones map ``[..., I]`` to ``[..., I]``. Everything runs in float32 and is cast
back to the input's dtype.
"""

from __future__ import annotations

import enum

import torch
import torch.nn.functional as nnf

SWIGLUOAI_ALPHA = 1.702
SWIGLUOAI_LIMIT = 7.0


class MoEActivation(str, enum.Enum):  # noqa: UP042 (StrEnum needs Python 3.11)
    """An expert's activation; the value is the name engines pass (``activation="silu"``)."""

    SILU = "silu"
    GELU = "gelu"
    GELU_TANH = "gelu_tanh"
    SWIGLUOAI = "swigluoai"
    SILU_NO_MUL = "silu_no_mul"
    GELU_NO_MUL = "gelu_no_mul"
    RELU2_NO_MUL = "relu2_no_mul"

    @property
    def is_gated(self) -> bool:
        """Whether GEMM1 produces gate and up halves (``2I`` columns) multiplied together."""
        return not self.value.endswith("_no_mul")

    @classmethod
    def parse(cls, activation: str | MoEActivation) -> MoEActivation:
        """``activation`` as a member; ``ValueError`` listing the names for an unknown one."""
        try:
            return cls(activation)
        except ValueError:
            names = [member.value for member in cls]
            raise ValueError(f"activation must be one of {names}, got {activation!r}") from None


def adjust_N_for_activation(N: int, activation: str | MoEActivation) -> int:  # noqa: N802 (spec name)
    """Width of the activation's output for a GEMM1 output of width ``N``."""
    return N // 2 if MoEActivation.parse(activation).is_gated else N


def apply_activation(gemm1_out: torch.Tensor, activation: str | MoEActivation) -> torch.Tensor:
    """``act(gemm1_out)``: ``[..., N]`` -> ``[..., adjust_N_for_activation(N)]``, same dtype."""
    act = MoEActivation.parse(activation)
    x = gemm1_out.float()
    if act is MoEActivation.SWIGLUOAI:
        gate, up = x[..., 0::2], x[..., 1::2]
        gate = gate.clamp(max=SWIGLUOAI_LIMIT)
        up = up.clamp(-SWIGLUOAI_LIMIT, SWIGLUOAI_LIMIT)
        out = (up + 1.0) * gate * torch.sigmoid(SWIGLUOAI_ALPHA * gate)
    elif act.is_gated:
        half = x.shape[-1] // 2
        gate, up = x[..., :half], x[..., half:]
        if act is MoEActivation.SILU:
            out = nnf.silu(gate) * up
        elif act is MoEActivation.GELU:
            out = nnf.gelu(gate) * up
        else:
            out = nnf.gelu(gate, approximate="tanh") * up
    elif act is MoEActivation.SILU_NO_MUL:
        out = nnf.silu(x)
    elif act is MoEActivation.GELU_NO_MUL:
        out = nnf.gelu(x)
    else:
        out = torch.relu(x).square()
    return out.to(gemm1_out.dtype)
