"""Products kept transposed (``b.T @ a.T``), so that a few token rows fill the MMA's N operand.

Hopper's warpgroup MMA takes its M operand in multiples of 64 rows and its N operand in
multiples of 8. A product ``a [ROWS, BLOCK_K] @ b [BLOCK_K, BLOCK_N]`` with fewer than 64 token
rows is lowered by Triton 3.6 to the per-warp MMA instead, which also loads the weight tile
into registers. Kept transposed, ``[BLOCK_N, ROWS]``, the weight tile (already in shared memory)
is the M operand and the rows are N. The accumulator is transposed back once, after the K loop.
Folded tails use it (``TAIL_SWAP``, see ``tail_fold``) and so may a whole tile (``SWAP_AB``).
"""

from __future__ import annotations

import triton
import triton.language as tl

from moekit.experts._triton_impl.tiles import dot


@triton.jit
def product_zeros(ROWS: tl.constexpr, BLOCK_N: tl.constexpr, SWAP: tl.constexpr):
    """A float32 accumulator: ``[ROWS, BLOCK_N]``, or its transpose with ``SWAP``."""
    # one return: the compiler checks every return statement's type, a constexpr branch's too
    if SWAP:
        zeros = tl.zeros([BLOCK_N, ROWS], dtype=tl.float32)
    else:
        zeros = tl.zeros([ROWS, BLOCK_N], dtype=tl.float32)
    return zeros


@triton.jit
def add_product(a, b, acc, IEEE_FP32: tl.constexpr, SWAP: tl.constexpr):
    """``acc + a @ b`` for ``a [ROWS, BLOCK_K]`` and ``b [BLOCK_K, BLOCK_N]``, kept transposed
    with ``SWAP`` (``acc`` as ``product_zeros`` gives it)."""
    if SWAP:
        acc = dot(tl.trans(b), tl.trans(a), acc, IEEE_FP32)
    else:
        acc = dot(a, b, acc, IEEE_FP32)
    return acc


@triton.jit
def product_rows(acc, SWAP: tl.constexpr):
    """The accumulator as ``[ROWS, BLOCK_N]``."""
    if SWAP:
        acc = tl.trans(acc)
    return acc
