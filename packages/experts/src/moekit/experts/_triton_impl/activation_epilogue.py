"""The expert activations as Triton functions, applied to float32 GEMM1 tiles in registers.

Codes follow ``ACTIVATION_CODES``; the formulas are those of ``moekit.experts.activation``, whose
``SWIGLUOAI_ALPHA`` and ``SWIGLUOAI_LIMIT`` the kernels receive as compile-time arguments.
"""

from __future__ import annotations

import triton
import triton.language as tl

from moekit.experts.activation import MoEActivation

ACTIVATION_CODES = {
    MoEActivation.SILU: 0,
    MoEActivation.GELU: 1,
    MoEActivation.GELU_TANH: 2,
    MoEActivation.SWIGLUOAI: 3,
    MoEActivation.SILU_NO_MUL: 0,
    MoEActivation.GELU_NO_MUL: 1,
    MoEActivation.RELU2_NO_MUL: 4,
}

# Compiled kernels may read module globals only when they are tl.constexpr instances.
_SQRT_HALF = tl.constexpr(0.7071067811865476)
_SQRT_2_OVER_PI = tl.constexpr(0.7978845608028654)


@triton.jit
def unary_activation(x, ACTIVATION: tl.constexpr):
    """silu (0), gelu (1), gelu_tanh (2) or relu² (4) of a float32 tile."""
    if ACTIVATION == 0:
        return x * tl.sigmoid(x)
    elif ACTIVATION == 1:
        return 0.5 * x * (1.0 + tl.erf(x * _SQRT_HALF))
    elif ACTIVATION == 2:
        # tanh(z) = 2 sigmoid(2z) - 1 keeps to functions every backend has
        inner = _SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)
        return x * tl.sigmoid(2.0 * inner)
    else:
        relu = tl.maximum(x, 0.0)
        return relu * relu


@triton.jit
def gated_activation(gate, up, ACTIVATION: tl.constexpr, ALPHA: tl.constexpr,
                     LIMIT: tl.constexpr):  # fmt: skip
    """``act(gate) * up``, or gpt-oss's clamped ``swigluoai`` (3), of float32 tiles."""
    if ACTIVATION == 3:
        gate = tl.minimum(gate, LIMIT)
        up = tl.minimum(tl.maximum(up, -LIMIT), LIMIT)
        return (up + 1.0) * gate * tl.sigmoid(ALPHA * gate)
    else:
        return unary_activation(gate, ACTIVATION) * up
