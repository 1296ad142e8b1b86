"""Folding an expert's short last m-tile into the program of the tile before it (``TAIL_M``).

With random routing about half of the experts spill a few rows past a multiple of ``BLOCK_M``,
so they get one more aligned m-tile that is mostly padding. That tile's program streams the same
weight tiles again and runs a whole ``BLOCK_M``-row MMA for a few live rows. When all the live
rows of m-tile ``q`` lie in its first ``TAIL_M`` rows and m-tile ``q - 1`` belongs to the same
expert, tile ``q - 1``'s program also computes those ``TAIL_M`` rows, from each weight tile it
has already loaded, and tile ``q``'s program returns at once. Both programs decide from the same
two ``expert_ids`` entries and one ``sorted_token_ids`` entry, so they always agree. The live
rows of a segment come before its padding, so one entry tells whether rows ``TAIL_M`` and later
of tile ``q`` are all padding. A ``TAIL_M`` of ``BLOCK_M`` folds an expert's last tile whatever
its rows, so that an expert of up to two tiles is one program: where a GEMM's programs fill
about one wave of the SMs, the count of programs then follows the experts, not the routing.
"""

from __future__ import annotations

import triton
import triton.language as tl

from moekit.experts._triton_impl.tiles import dot, tile_matrix_rows, tile_slots


@triton.jit
def tail_folds(q, expert_ids_ptr, sorted_token_ids_ptr, num_sorted, num_valid_slots,
               BLOCK_M: tl.constexpr, TAIL_M: tl.constexpr):  # fmt: skip
    """Whether aligned m-tile ``q`` is folded into tile ``q - 1``'s program: both tiles belong to
    one local expert and sorted position ``q * BLOCK_M + TAIL_M`` is padding (or past the end).
    A ``TAIL_M`` of ``BLOCK_M`` folds the expert's last tile whatever its rows: the next tile
    belongs to another expert (or is past the end)."""
    num_m_tiles = tl.cdiv(num_sorted, BLOCK_M)
    in_range = (q >= 1) & (q < num_m_tiles)
    expert = tl.load(expert_ids_ptr + q, mask=in_range, other=-1)
    before = tl.load(expert_ids_ptr + q - 1, mask=in_range, other=-1)
    if TAIL_M == BLOCK_M:
        after = tl.load(expert_ids_ptr + q + 1, mask=in_range & (q + 1 < num_m_tiles), other=-1)
        last_rows_fit = after != expert
    else:  # the live rows of a segment come before its padding
        pos = q * BLOCK_M + TAIL_M
        after_tail = tl.load(sorted_token_ids_ptr + pos, mask=in_range & (pos < num_sorted),
                             other=num_valid_slots)  # fmt: skip
        last_rows_fit = after_tail >= num_valid_slots
    return (expert >= 0) & (expert == before) & last_rows_fit


@triton.jit
def tail_rows(sorted_token_ids_ptr, tail_start, num_sorted, num_valid_slots,
              A_ROWS_SORTED: tl.constexpr, TOP_K: tl.constexpr, TAIL_M: tl.constexpr):  # fmt: skip
    """``(slots, slot_ok, a_rows, a_ok)`` of the ``TAIL_M`` folded rows from sorted position
    ``tail_start``: their flat slots and A rows, as ``tile_slots`` and ``tile_matrix_rows`` give
    them for a whole tile."""
    slots, slot_ok = tile_slots(sorted_token_ids_ptr, tail_start, num_sorted, num_valid_slots,
                                TAIL_M)  # fmt: skip
    a_rows, a_ok = tile_matrix_rows(tail_start, slots, slot_ok, num_sorted, A_ROWS_SORTED, TOP_K,
                                    TAIL_M)  # fmt: skip
    return slots, slot_ok, a_rows, a_ok


@triton.jit
def tail_zeros(TAIL_ROWS: tl.constexpr, BLOCK_N: tl.constexpr, TAIL_SWAP: tl.constexpr):
    """A float32 tail accumulator: ``[TAIL_ROWS, BLOCK_N]``, or its transpose with ``TAIL_SWAP``."""
    # one return: the compiler checks every return statement's type, a constexpr branch's too
    if TAIL_SWAP:
        zeros = tl.zeros([BLOCK_N, TAIL_ROWS], dtype=tl.float32)
    else:
        zeros = tl.zeros([TAIL_ROWS, BLOCK_N], dtype=tl.float32)
    return zeros


@triton.jit
def tail_product(tail_a, b, tail_acc, IEEE_FP32: tl.constexpr, TAIL_SWAP: tl.constexpr):
    """``tail_acc + tail_a @ b`` for ``tail_a [TAIL_ROWS, BLOCK_K]`` and ``b [BLOCK_K, BLOCK_N]``,
    kept transposed with ``TAIL_SWAP`` (``tail_acc`` as ``tail_zeros`` gives it)."""
    if TAIL_SWAP:
        tail_acc = dot(tl.trans(b), tl.trans(tail_a), tail_acc, IEEE_FP32)
    else:
        tail_acc = dot(tail_a, b, tail_acc, IEEE_FP32)
    return tail_acc


@triton.jit
def tail_result(tail_acc, TAIL_SWAP: tl.constexpr):
    """The tail accumulator as ``[TAIL_ROWS, BLOCK_N]``."""
    if TAIL_SWAP:
        tail_acc = tl.trans(tail_acc)
    return tail_acc
