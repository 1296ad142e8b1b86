"""Folding an expert's short last m-tile into the program of the tile before it (``TAIL_M``).

With random routing about half of the experts spill a few rows past a multiple of ``BLOCK_M``,
so they get one more aligned m-tile that is mostly padding. That tile's program streams the same
weight tiles again and runs a whole ``BLOCK_M``-row MMA for a few live rows. When all the live
rows of m-tile ``q`` lie in its first ``TAIL_M`` rows and m-tile ``q - 1`` belongs to the same
expert, tile ``q - 1``'s program also computes those ``TAIL_M`` rows, from each weight tile it
has already loaded, and tile ``q``'s program returns at once. Both programs decide from the same
two ``expert_ids`` entries and one ``sorted_token_ids`` entry, so they always agree. The live
rows of a segment come before its padding, so one entry tells whether rows ``TAIL_M`` and later
of tile ``q`` are all padding. With ``TAIL_SWAP`` the tail's products are kept transposed
(``swap_ab``), so that its few rows fill the MMA's N operand.
"""

from __future__ import annotations

import triton
import triton.language as tl

from moekit.experts._triton_impl.tiles import tile_matrix_rows, tile_slots


@triton.jit
def tail_folds(q, expert_ids_ptr, sorted_token_ids_ptr, num_sorted, num_valid_slots,
               BLOCK_M: tl.constexpr, TAIL_M: tl.constexpr):  # fmt: skip
    """Whether aligned m-tile ``q`` is folded into tile ``q - 1``'s program: both tiles belong to
    one local expert and sorted position ``q * BLOCK_M + TAIL_M`` is padding (or past the end)."""
    num_m_tiles = tl.cdiv(num_sorted, BLOCK_M)
    in_range = (q >= 1) & (q < num_m_tiles)
    expert = tl.load(expert_ids_ptr + q, mask=in_range, other=-1)
    before = tl.load(expert_ids_ptr + q - 1, mask=in_range, other=-1)
    pos = q * BLOCK_M + TAIL_M
    after_tail = tl.load(sorted_token_ids_ptr + pos, mask=in_range & (pos < num_sorted),
                         other=num_valid_slots)  # fmt: skip
    return (expert >= 0) & (expert == before) & (after_tail >= num_valid_slots)


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
